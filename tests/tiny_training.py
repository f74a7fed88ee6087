"""A tiny training config, a fault-injecting loss and callback, and the exact-run oracle shared
by the tests in tests/training/ (imported by name: tests/ is on the path)."""

from __future__ import annotations

import math
import os
import signal
import time
from pathlib import Path

import torch

from gatrank.config import Config
from gatrank.data import split_indices
from gatrank.losses import LossOutput, pairwise_rank_loss
from gatrank.training.checkpoint import read_checkpoint

TIMING = {"time_s"}


def tiny(**overrides) -> Config:
    settings = {
        "model.hidden_dim": 8, "model.heads": 2, "model.num_layers": 2, "model.dropout": 0.2,
        "training.batch_size": 4, "training.epochs": 10, "training.log_every": 1,
        "training.learning_rate": 0.03, "training.patience": 3, "training.device": "cpu",
        "training.enable_debug_logs": False,
        "data.val_fraction": 0.25, "data.test_fraction": 0.15,
    }
    settings.update({k.replace("__", "."): v for k, v in overrides.items()})
    return Config().updated(settings)


class Loss:
    """The pairwise loss, with faults: NaN on given calls, Ctrl-C on one call."""

    def __init__(self, nan_at: set[int] = frozenset(), interrupt_at: int | None = None,
                 always_nan: bool = False):
        self.calls = 0
        self.nan_at, self.interrupt_at, self.always_nan = set(nan_at), interrupt_at, always_nan

    def __call__(self, scores, targets):
        self.calls += 1
        if self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        out = pairwise_rank_loss(scores, targets)
        if self.always_nan or self.calls in self.nan_at:
            return LossOutput(out.loss * float("nan"), out.num_pairs)
        return out


class StopAt:
    """A callback that interrupts training at the logged record of ``epoch``."""

    def __init__(self, epoch: int, how: str = "ctrl-c"):
        self.epoch, self.how, self.fired = epoch, how, False

    def __call__(self, record):
        if record["epoch"] == self.epoch and not self.fired:
            self.fired = True
            if self.how == "sigterm":
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # the handler raises before this returns
                raise AssertionError("SIGTERM was not turned into an interrupt")
            raise KeyboardInterrupt


def strip(history):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in history]


def assert_same_run(a, b, out_a: Path | None = None, out_b: Path | None = None):
    """Two runs ended identically: weights, history, summary and (with folders) last.pt."""
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert strip(a.history) == strip(b.history)
    for key in ("status", "stop_reason", "epochs_run", "best_epoch", "best_val_spearman",
                "skipped_steps", "test", "split_sizes"):
        assert a.summary.get(key) == b.summary.get(key), key
    if out_a and out_b:
        la, lb = read_checkpoint(out_a / "last.pt"), read_checkpoint(out_b / "last.pt")
        assert la["epoch"] == lb["epoch"]
        for k in la["state_dict"]:
            assert torch.equal(la["state_dict"][k], lb["state_dict"][k]), k
        for pa, pb in zip(la["optimizer"]["state"].values(), lb["optimizer"]["state"].values(),
                          strict=True):
            for k in pa:
                assert torch.equal(torch.as_tensor(pa[k]), torch.as_tensor(pb[k])), k
        for k in ("torch", "loader"):
            assert torch.equal(la["resume"]["rng"][k], lb["resume"]["rng"][k]), k
        assert la["resume"]["epochs_since_best"] == lb["resume"]["epochs_since_best"]


def weights_finite(state) -> bool:
    return all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def train_batches(graphs, cfg) -> int:
    """Optimizer steps per epoch of ``cfg`` on ``graphs``."""
    n = len(split_indices(graphs, seed=cfg.training.seed, val_fraction=cfg.data.val_fraction,
                          test_fraction=cfg.data.test_fraction)["train"])
    return math.ceil(n / cfg.training.batch_size)
