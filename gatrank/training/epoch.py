"""One epoch: forward, backward and update over the training batches, with the non-finite
handling (``training.nonfinite``), and the record a logged epoch writes to ``metrics.jsonl``."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import gatrank.training.distributed as dist_
from gatrank.metrics import grad_norms
from gatrank.model import score_batch
from gatrank.training.checkpoint import all_finite
from gatrank.training.scoring import split_metrics
from gatrank.training.setup import Setup
from gatrank.training.state import LoopState

__all__ = ["EpochStats", "NonFiniteError", "Probe", "epoch_record", "format_record", "train_epoch"]

logger = logging.getLogger(__name__)

Probe = Callable[[nn.Module, list, torch.device], dict[str, Any]]
"""``probe(model, train_graphs, device) -> dict`` merged into each logged record."""


class NonFiniteError(RuntimeError):
    """The loss or gradient norm became NaN/Inf and ``training.nonfinite`` is ``stop`` (or the
    parameters themselves are non-finite, which skipping steps cannot repair)."""


@dataclass
class EpochStats:
    """What one epoch's optimizer steps measured in this process (skipped steps leave no entry)."""

    losses: list[float] = field(default_factory=list)
    pairs: list[int] = field(default_factory=list)
    """Valid pairs per batch."""
    norms: list[float] = field(default_factory=list)
    """Total gradient norm per step, before clipping."""
    per_layer: dict[str, float] = field(default_factory=dict)
    """Gradient norm per layer at the epoch's last batch."""

    loss: float = math.nan
    """The epoch's mean loss, over every process's steps under torchrun (see :meth:`reduce`)."""
    pair_stats: dict[str, Any] = field(default_factory=dict)
    """``valid_pairs_mean`` and ``batches_without_pairs``, over every process's steps."""

    def reduce(self, s: Setup) -> None:
        """Set :attr:`loss` and :attr:`pair_stats` (a collective call under torchrun)."""
        losses, pairs = self.losses, self.pairs
        if s.di.enabled:  # the epoch's loss and pair counts over every rank's batches
            n_loss, sum_loss, sum_pairs, n_zero = dist_.all_reduce_sum(
                [len(losses), sum(losses), sum(pairs), sum(p == 0 for p in pairs)], s.device)
            self.loss = sum_loss / n_loss if n_loss else float("nan")
            self.pair_stats = {"valid_pairs_mean": sum_pairs / n_loss if n_loss else 0.0,
                               "batches_without_pairs": int(n_zero)}
        else:
            self.loss = float(np.mean(losses)) if losses else float("nan")
            self.pair_stats = {"valid_pairs_mean": float(np.mean(pairs)) if pairs else 0.0,
                               "batches_without_pairs": int(sum(p == 0 for p in pairs))}


def _batch_group(batch) -> Tensor | None:
    group = getattr(batch, "group", None)
    if group is None or bool((group < 0).all()):
        return None
    return group


def train_epoch(s: Setup, st: LoopState) -> EpochStats:
    """Train epoch ``st.epoch``: one optimizer step per batch, non-finite steps stopped or
    skipped (counted in ``st.skipped_steps``).

    Raises:
        NonFiniteError: a non-finite loss or gradient norm under ``training.nonfinite: stop``,
            non-finite parameters, or an epoch whose every step was skipped.
    """
    s.net.train()
    if s.sampler is not None:
        s.sampler.set_epoch(st.epoch)
    stats = EpochStats()
    skipped_before = st.skipped_steps
    last_batch = len(s.loader) - 1
    for b_idx, batch in enumerate(s.fixed_batches or s.loader):
        _step(s, st, stats, b_idx, batch, last=b_idx == last_batch)
    if not stats.losses and st.skipped_steps > skipped_before:
        raise NonFiniteError(
            f"every step of epoch {st.epoch} was non-finite and skipped "
            "(training.nonfinite=skip): training cannot make progress. Lower "
            "training.learning_rate and check the data (gatrank check-data)."
        )
    stats.reduce(s)
    return stats


def _step(s: Setup, st: LoopState, stats: EpochStats, b_idx: int, batch, *, last: bool) -> None:
    # forward backward
    batch = batch.to(s.device)
    s.optimizer.zero_grad(set_to_none=True)
    # overfit mode: the model's own dropout off too, not only gatrank's (forward only: the mode
    # sees every torch call while active)
    with s.dropout_off.forward_scope() if s.dropout_off is not None else nullcontext():
        scores = score_batch(s.train_net, batch)  # (G,), or ScoreShapeError naming the shape
    lo = s.loss_fn(scores, batch.y.reshape(-1), _batch_group(batch))
    loss_val = float(lo.loss.detach())
    if lo.loss.requires_grad:
        lo.loss.backward()
    elif s.di.enabled and scores.requires_grad:
        # every rank must join DDP's gradient all-reduce, even with nothing to learn
        (scores.sum() * 0.0).backward()
    if last:  # per-layer norms are logged for an epoch's last step
        _, stats.per_layer = grad_norms(s.net)
    # clip_grad_norm_ returns the total norm before clipping: one pass, no extra sync
    total = float(torch.nn.utils.clip_grad_norm_(
        s.net.parameters(), s.tc.grad_clip if s.tc.grad_clip > 0 else math.inf
    ))
    # non-finite: stop or skip
    finite = math.isfinite(loss_val) and math.isfinite(total)
    if s.di.enabled:  # all ranks skip or stop together
        finite = not dist_.any_flag(not finite, s.device)
    if not finite:
        _skip_or_stop(s, st, b_idx, loss_val, total)
        return
    # update
    s.optimizer.step()
    stats.losses.append(loss_val)
    stats.pairs.append(lo.num_pairs)
    stats.norms.append(total)


def _skip_or_stop(s: Setup, st: LoopState, b_idx: int, loss_val: float, total: float) -> None:
    msg = (
        f"non-finite {'loss' if not math.isfinite(loss_val) else 'gradient norm'} "
        f"at epoch {st.epoch}, batch {b_idx} (loss={loss_val}, grad_norm={total})"
    )
    params_ok = all_finite(s.net.state_dict())
    if not params_ok:
        msg += ("; the parameters themselves are already NaN/Inf (an earlier step "
                "diverged), so skipping steps cannot recover")
    if s.tc.nonfinite == "stop" or not params_ok:
        raise NonFiniteError(
            msg + f"; stopped (training.nonfinite={s.tc.nonfinite}). Lower "
            "training.learning_rate, keep training.grad_clip on, check the data "
            "for NaN/Inf (gatrank check-data), or set training.nonfinite: skip "
            "to skip such steps."
        )
    st.skipped_steps += 1
    logger.warning("%s; step skipped (training.nonfinite=skip)", msg)


def epoch_record(
    s: Setup, st: LoopState, stats: EpochStats, val_metrics: dict[str, float],
    probes: Sequence[Probe],
) -> dict[str, Any]:
    """The logged record of epoch ``st.epoch`` (one line of ``metrics.jsonl``): training loss,
    the training graphs' ranking metrics, gradient norms, pair counts, learning rate, time,
    validation metrics and the probes' measurements."""
    record = {
        "epoch": st.epoch,
        "loss": stats.loss,
        **split_metrics(s.net, s.train_eval, s.device, s.tie_eps),
        "grad_norm": float(np.mean(stats.norms)) if stats.norms else 0.0,
        "grad_norm_per_layer": stats.per_layer,
        **stats.pair_stats,
        "valid_pairs_min": int(min(stats.pairs)) if stats.pairs else 0,
        "skipped_steps": st.skipped_steps,
        "lr": s.optimizer.param_groups[0]["lr"],
        "time_s": round(st.elapsed(), 3),
        **val_metrics,
    }
    for probe in probes:
        record.update(probe(s.net, s.train_set, s.device))
    return record


def format_record(r: dict[str, Any]) -> str:
    """The log line of a record (``training.enable_debug_logs``)."""
    text = (
        f"epoch {r['epoch']:4d}  loss {r['loss']:.4f}  pair_acc {r['pairwise_accuracy']:.3f}  "
        f"spearman {r['spearman']:.3f}  score mean {r['score_mean']:.4f} std {r['score_std']:.4f}  "
        f"grad_norm {r['grad_norm']:.4f}"
    )
    if "val_spearman" in r:
        text += (f"  | val pair_acc {r['val_pairwise_accuracy']:.3f} "
                 f"spearman {r['val_spearman']:.3f}")
    return text
