"""One epoch's non-finite handling: NaN/Inf losses and gradients stop or skip, the message names
the epoch and batch, and non-finite weights never reach disk."""

from __future__ import annotations

import json
import math

import pytest
import torch
from tiny_training import Loss, tiny, train_batches, weights_finite

from gatrank.losses import pairwise_rank_loss
from gatrank.model import build_model
from gatrank.training import NonFiniteError, train
from gatrank.training.checkpoint import read_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


def test_nonfinite_stop_names_epoch_and_batch_and_keeps_the_last_good_checkpoint(
    graphs, tmp_path
):
    cfg = tiny(training__patience=0)
    per_epoch = train_batches(graphs, cfg)
    with pytest.raises(NonFiniteError) as err:
        train(cfg, graphs=graphs, loss=Loss(nan_at={2 * per_epoch + 2}), progress=False,
              out_dir=tmp_path / "nan")
    msg = str(err.value)
    assert "non-finite loss at epoch 3, batch 1" in msg
    assert "after epoch 2" in msg and str(tmp_path / "nan" / "last.pt") in msg
    # oracle: the same run told to stop after epoch 2 never saw the NaN
    clean = train(cfg.updated({"training.epochs": 2}), graphs=graphs, loss=Loss(),
                  progress=False, out_dir=tmp_path / "clean")
    got, want = read_checkpoint(tmp_path / "nan" / "last.pt"), read_checkpoint(
        tmp_path / "clean" / "last.pt")
    assert got["epoch"] == want["epoch"] == 2 and got["status"] == "nonfinite"
    for k, v in want["state_dict"].items():
        assert torch.equal(got["state_dict"][k], v), k
    best = read_checkpoint(tmp_path / "nan" / "best.pt")
    assert weights_finite(best["state_dict"])
    assert best["epoch"] == clean.summary["best_epoch"]
    summary = json.loads((tmp_path / "nan" / "summary.json").read_text())
    assert summary["status"] == "nonfinite" and summary["epochs_run"] == 2
    assert "epoch 3, batch 1" in summary["stop_reason"]


@pytest.mark.parametrize("mode", ["stop", "skip"])
def test_nan_weights_never_reach_disk(graphs, tmp_path, mode):
    """Weights poisoned after epoch 2: last.pt keeps epoch 1's bytes, best.pt stays finite."""
    saved = {}

    def poison(record):
        if record["epoch"] == 2:
            saved["last"] = (tmp_path / "last.pt").read_bytes()  # epoch 1's periodic save
            with torch.no_grad():
                next(p for p in net.parameters()).fill_(float("nan"))

    cfg = tiny(training__patience=0, training__nonfinite=mode)
    net = build_model(graphs.num_features, cfg.model, "gat")
    with pytest.raises(NonFiniteError, match="parameters themselves are already NaN"):
        train(cfg, graphs=graphs, model=net, callbacks=[poison], progress=False,
              out_dir=tmp_path)
    assert (tmp_path / "last.pt").read_bytes() == saved["last"]
    assert read_checkpoint(tmp_path / "last.pt")["epoch"] == 1
    assert weights_finite(read_checkpoint(tmp_path / "best.pt")["state_dict"])
    assert not list(tmp_path.glob(".*.tmp"))


def test_skip_mode_counts_skipped_steps(graphs, caplog):
    cfg = tiny(training__patience=0, training__epochs=4, training__nonfinite="skip")
    per_epoch = train_batches(graphs, cfg)
    bad = {3, per_epoch + 1}  # epoch 1 batch 2, epoch 2 batch 0
    with caplog.at_level("WARNING", logger="gatrank.training"):
        res = train(cfg, graphs=graphs, loss=Loss(nan_at=bad), progress=False)
    assert res.summary["status"] == "completed"
    assert res.summary["skipped_steps"] == len(bad)
    assert [r["skipped_steps"] for r in res.history] == [1, 2, 2, 2]
    assert all(math.isfinite(r["loss"]) for r in res.history)
    assert weights_finite(res.model.state_dict())
    assert "epoch 1, batch 2" in caplog.text and "epoch 2, batch 0" in caplog.text
    assert caplog.text.count("step skipped") == len(bad)


def test_skip_mode_gives_up_when_no_step_is_finite(graphs):
    cfg = tiny(training__nonfinite="skip")
    with pytest.raises(NonFiniteError, match="every step of epoch 1 was non-finite"):
        train(cfg, graphs=graphs, loss=Loss(always_nan=True), progress=False)


def test_inf_gradient_with_finite_loss_is_caught(graphs):
    def inf_grad_loss(scores, targets):
        scores.register_hook(lambda g: g * float("inf"))
        return pairwise_rank_loss(scores, targets)

    with pytest.raises(NonFiniteError, match=r"non-finite gradient norm at epoch 1, batch 0"):
        train(tiny(), graphs=graphs, loss=inf_grad_loss, progress=False)
