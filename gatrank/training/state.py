"""The epoch loop's state: history, best epoch, early stopping and the skipped-step count (what a
checkpoint keeps, :class:`~gatrank.training.checkpoint.Progress`), plus the run's clock, its
status and the snapshot of the last complete epoch that an interruption falls back to."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from gatrank.training.checkpoint import Progress, Snapshot, restore, set_rng_state, snapshot

__all__ = ["LoopState"]


@dataclass(kw_only=True)
class LoopState(Progress):
    """One run's loop state, over the model and optimizer it snapshots and restores."""

    net: nn.Module
    optimizer: torch.optim.Optimizer
    loader_gen: torch.Generator
    device: torch.device
    t_start: float
    """``time.perf_counter()`` when the run began (earlier by a resumed run's training time)."""
    epoch: int = 0
    """The epoch running; after the loop, the last complete epoch the state holds."""
    status: str = "completed"
    last_good: Snapshot | None = None
    """The state after the last complete epoch."""

    def elapsed(self) -> float:
        return time.perf_counter() - self.t_start

    def snapshot(self) -> Snapshot:
        """Everything an exact resume needs after epoch :attr:`epoch`."""
        return snapshot(self.epoch, self.net, self.optimizer, self, self.elapsed(), self.loader_gen)

    def restore(self, snap: Snapshot) -> None:
        """Go back to ``snap``: weights, optimizer state, history, best epoch and counters."""
        restore(snap, self.net, self.optimizer, self, self.device)

    def resume(self, snap: Snapshot) -> None:
        """Continue a run from its ``last.pt``: its state, clock and RNG states."""
        self.restore(snap)
        self.epoch = snap.epoch
        self.t_start -= snap.elapsed_s
        # last: model init and loader set-up drew from the RNGs too
        set_rng_state(snap.rng, self.loader_gen)

    def update_best(self, val_spearman: float) -> bool:
        """Count this epoch towards early stopping; True if it is the new best (kept)."""
        if val_spearman > self.best_val_spearman:
            self.best_epoch, self.best_val_spearman = self.epoch, val_spearman
            self.best_state = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
            self.epochs_since_best = 0
            return True
        self.epochs_since_best += 1
        return False

    def update_early_stop(self, patience: int, validated: bool) -> bool:
        """Stop once ``patience`` validated epochs in a row brought no better Spearman."""
        self.early_stopped = validated and patience > 0 and self.epochs_since_best >= patience
        if self.early_stopped:
            self.stop_reason = f"early stop: no better validation Spearman for {patience} epochs"
        return self.early_stopped
