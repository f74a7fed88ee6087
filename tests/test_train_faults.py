"""Faults during training: NaN/Inf, Ctrl-C and SIGTERM with exact resume, atomic writes,
and run-to-run reproducibility.

The oracle for every resume test is the same run without the interruption: on CPU, with the
same seed, the final weights, optimizer state, RNG states, history and summary must be *equal*,
not close. The tiny config early-stops at epoch 7 with its best epoch at 4, so the
early-stopping counter and the best-so-far state both matter to the outcome.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import gatrank.io
from gatrank.config import Config
from gatrank.data import load_graphs, safe_torch_load
from gatrank.datasets import write_dataset
from gatrank.io import atomic_torch_save, atomic_write_text, write_json
from gatrank.losses import LossOutput, pairwise_rank_loss
from gatrank.runtime import environment_info
from gatrank.training import NonFiniteError, train

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


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    return write_dataset("synthetic", tmp_path_factory.mktemp("syn"), n=24, seed=0)


@pytest.fixture(scope="module")
def graphs(manifest):
    return load_graphs(manifest)


@pytest.fixture(scope="module")
def reference(graphs, tmp_path_factory):
    """The uninterrupted run every resume test must reproduce exactly."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("reference")
    return train(tiny(), graphs=graphs, progress=False, out_dir=out), out


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
        la, lb = safe_torch_load(out_a / "last.pt"), safe_torch_load(out_b / "last.pt")
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


# --------------------------------------------------------------------------- NaN / Inf


def _train_batches(graphs, cfg) -> int:
    from gatrank.data import split_indices

    n = len(split_indices(graphs, seed=cfg.training.seed, val_fraction=cfg.data.val_fraction,
                          test_fraction=cfg.data.test_fraction)["train"])
    return math.ceil(n / cfg.training.batch_size)


def test_nonfinite_stop_names_epoch_and_batch_and_keeps_the_last_good_checkpoint(
    graphs, tmp_path
):
    cfg = tiny(training__patience=0)
    per_epoch = _train_batches(graphs, cfg)
    with pytest.raises(NonFiniteError) as err:
        train(cfg, graphs=graphs, loss=Loss(nan_at={2 * per_epoch + 2}), progress=False,
              out_dir=tmp_path / "nan")
    msg = str(err.value)
    assert "non-finite loss at epoch 3, batch 1" in msg
    assert "after epoch 2" in msg and str(tmp_path / "nan" / "last.pt") in msg
    # oracle: the same run told to stop after epoch 2 never saw the NaN
    clean = train(cfg.updated({"training.epochs": 2}), graphs=graphs, loss=Loss(),
                  progress=False, out_dir=tmp_path / "clean")
    got, want = safe_torch_load(tmp_path / "nan" / "last.pt"), safe_torch_load(
        tmp_path / "clean" / "last.pt")
    assert got["epoch"] == want["epoch"] == 2 and got["status"] == "nonfinite"
    for k, v in want["state_dict"].items():
        assert torch.equal(got["state_dict"][k], v), k
    best = safe_torch_load(tmp_path / "nan" / "best.pt")
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

    from gatrank.model import build_model

    cfg = tiny(training__patience=0, training__nonfinite=mode)
    net = build_model(graphs.num_features, cfg.model, "gat")
    with pytest.raises(NonFiniteError, match="parameters themselves are already NaN"):
        train(cfg, graphs=graphs, model=net, callbacks=[poison], progress=False,
              out_dir=tmp_path)
    assert (tmp_path / "last.pt").read_bytes() == saved["last"]
    assert safe_torch_load(tmp_path / "last.pt")["epoch"] == 1
    assert weights_finite(safe_torch_load(tmp_path / "best.pt")["state_dict"])
    assert not list(tmp_path.glob(".*.tmp"))


def test_skip_mode_counts_skipped_steps(graphs, caplog):
    cfg = tiny(training__patience=0, training__epochs=4, training__nonfinite="skip")
    per_epoch = _train_batches(graphs, cfg)
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


# --------------------------------------------------------------------------- interrupt / resume


@pytest.mark.parametrize("stop_epoch", [3, 6])
def test_interrupt_and_resume_equals_uninterrupted(graphs, reference, tmp_path, stop_epoch):
    ref, ref_out = reference
    assert ref.summary["stop_reason"].startswith("early stop")  # the counter matters here
    assert ref.summary["best_epoch"] < ref.summary["epochs_run"]
    first = train(tiny(), graphs=graphs, progress=False, out_dir=tmp_path,
                  callbacks=[StopAt(stop_epoch)])
    assert first.summary["status"] == "interrupted"
    assert first.summary["epochs_run"] == stop_epoch - 1
    assert "Ctrl-C during epoch" in first.summary["stop_reason"]
    ckpt = safe_torch_load(tmp_path / "last.pt")
    assert ckpt["epoch"] == stop_epoch - 1 and ckpt["status"] == "interrupted"
    assert len(ckpt["metrics"]) == stop_epoch - 1
    resumed = train(tiny(), graphs=graphs, progress=False, out_dir=tmp_path,
                    resume=tmp_path / "last.pt")
    assert resumed.summary["resumed_from"] == str(tmp_path / "last.pt")
    assert_same_run(ref, resumed, ref_out, tmp_path)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(ln)["epoch"] for ln in lines] == [r["epoch"] for r in ref.history]


def test_interrupt_mid_epoch_drops_the_partial_epoch(graphs, tmp_path):
    per_epoch = _train_batches(graphs, tiny())
    first = train(tiny(), graphs=graphs, loss=Loss(interrupt_at=4 * per_epoch + 2),
                  progress=False, out_dir=tmp_path)
    assert first.summary["status"] == "interrupted" and first.summary["epochs_run"] == 4
    assert [r["epoch"] for r in first.history] == [1, 2, 3, 4]
    resumed = train(tiny(), graphs=graphs, loss=Loss(), progress=False, out_dir=tmp_path,
                    resume=tmp_path / "last.pt")
    plain = train(tiny(), graphs=graphs, loss=Loss(), progress=False, out_dir=tmp_path / "p")
    assert_same_run(plain, resumed, tmp_path / "p", tmp_path)


def test_sigterm_in_process_resumes_exactly(graphs, reference, tmp_path):
    ref, ref_out = reference
    before = signal.getsignal(signal.SIGTERM)
    first = train(tiny(), graphs=graphs, progress=False, out_dir=tmp_path,
                  callbacks=[StopAt(5, how="sigterm")])
    assert signal.getsignal(signal.SIGTERM) == before  # handler restored
    assert first.summary["status"] == "interrupted"
    assert first.summary["stop_reason"].startswith("SIGTERM during epoch 5")
    resumed = train(tiny(), graphs=graphs, progress=False, resume=tmp_path / "last.pt",
                    out_dir=tmp_path)
    assert_same_run(ref, resumed, ref_out, tmp_path)


def test_overfit_mode_resumes_exactly(graphs, tmp_path):
    cfg = tiny(training__overfit_n=12, training__epochs=6, model__dropout=0.0)
    straight = train(cfg, graphs=graphs, progress=False, out_dir=tmp_path / "a")
    train(cfg, graphs=graphs, progress=False, out_dir=tmp_path / "b", callbacks=[StopAt(4)])
    resumed = train(cfg, graphs=graphs, progress=False, out_dir=tmp_path / "b",
                    resume=tmp_path / "b" / "last.pt")
    assert_same_run(straight, resumed, tmp_path / "a", tmp_path / "b")


def test_resume_extends_a_finished_run(graphs, tmp_path):
    cfg = tiny(training__patience=0, training__epochs=6)
    straight = train(cfg, graphs=graphs, progress=False, out_dir=tmp_path / "a")
    short = train(cfg.updated({"training.epochs": 3}), graphs=graphs, progress=False,
                  out_dir=tmp_path / "b")
    assert short.summary["status"] == "completed"
    longer = train(cfg, graphs=graphs, progress=False, out_dir=tmp_path / "b",
                   resume=tmp_path / "b" / "last.pt")
    assert_same_run(straight, longer, tmp_path / "a", tmp_path / "b")


def test_resumed_early_stopped_run_stays_stopped(graphs, reference, tmp_path):
    ref, ref_out = reference
    again = train(tiny(), graphs=graphs, progress=False, resume=ref_out / "last.pt",
                  out_dir=tmp_path)
    assert_same_run(ref, again, ref_out, tmp_path)


def test_resume_refuses_a_different_config_or_data(graphs, reference, tmp_path):
    _, ref_out = reference
    with pytest.raises(ValueError, match=r"training.learning_rate: 0.03 -> 0.01"):
        train(tiny(training__learning_rate=0.01), graphs=graphs, progress=False,
              resume=ref_out / "last.pt")
    with pytest.raises(ValueError, match="graphs .* differ"):
        train(tiny(), graphs=graphs.subset(list(range(20))), progress=False,
              resume=ref_out / "last.pt")
    with pytest.raises(ValueError, match="resume from the run's last.pt"):
        train(tiny(), graphs=graphs, progress=False, resume=ref_out / "best.pt")
    with pytest.raises(ValueError, match="loss 'built-in', not 'custom'; pass the same --loss"):
        train(tiny(), graphs=graphs, loss=Loss(), progress=False, resume=ref_out / "last.pt")


@pytest.mark.slow
def test_sigterm_subprocess_saves_and_resumes(manifest, tmp_path):
    from gatrank.cli import main

    (tmp_path / "tiny.yaml").write_text(
        "model:\n  hidden_dim: 8\n  heads: 2\n  num_layers: 1\n"
        "training:\n  batch_size: 4\n  log_every: 1\n  device: cpu\n  patience: 0\n"
    )
    run = tmp_path / "run"
    args = ["train", "--manifest", str(manifest), "--config", str(tmp_path / "tiny.yaml"),
            "--no-progress", "--no-baseline", "--out", str(run)]
    proc = subprocess.Popen([sys.executable, "-m", "gatrank", *args, "--epochs", "5000"],
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    metrics = run / "metrics.jsonl"
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training ended before it could be interrupted"
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "SIGTERM during epoch" in stderr
    assert f"gatrank train --resume {run / 'last.pt'}" in stderr
    ckpt = safe_torch_load(run / "last.pt")
    done = ckpt["epoch"]
    assert ckpt["status"] == "interrupted" and done >= 3 and len(ckpt["metrics"]) == done
    assert json.loads((run / "summary.json").read_text())["status"] == "interrupted"

    assert main(["train", "--resume", str(run / "last.pt"), "--epochs", str(done + 2),
                 "--no-progress", "--no-baseline", "-q"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_run"] == done + 2
    epochs = [json.loads(ln)["epoch"] for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, done + 3))


# --------------------------------------------------------------------------- atomic writes


def _crash_on_fsync(monkeypatch):
    """The bytes reach the temporary file, then the 'machine dies' before the rename."""

    def crash(fd):
        raise OSError("simulated crash mid-write")

    monkeypatch.setattr(gatrank.io.os, "fsync", crash)


@pytest.mark.parametrize("writer", ["text", "json", "torch"])
def test_failed_write_keeps_the_previous_file(tmp_path, monkeypatch, writer):
    path = tmp_path / "file"
    write = {
        "text": lambda v: atomic_write_text(path, v * 1000),
        "json": lambda v: write_json(path, {"v": v}),
        "torch": lambda v: atomic_torch_save(path, {"v": torch.full((1000,), float(len(v)))}),
    }[writer]
    write("old")
    before = path.read_bytes()
    with monkeypatch.context() as m:
        _crash_on_fsync(m)
        with pytest.raises(OSError, match="simulated crash"):
            write("newer")
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["file"]  # no temporary file left


def test_unpicklable_object_fails_half_way_and_keeps_the_previous_file(tmp_path):
    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle this")

    path = tmp_path / "ckpt.pt"
    atomic_torch_save(path, {"w": torch.ones(3)})
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="cannot pickle"):
        atomic_torch_save(path, {"w": torch.zeros(10_000), "bad": Unpicklable()})
    assert path.read_bytes() == before and len(list(tmp_path.iterdir())) == 1


def test_crash_while_saving_a_checkpoint_keeps_the_old_one(graphs, tmp_path, monkeypatch):
    cfg = tiny(training__epochs=2, training__patience=0)
    train(cfg, graphs=graphs, progress=False, out_dir=tmp_path)
    names = ("last.pt", "best.pt", "summary.json")
    before = {n: (tmp_path / n).read_bytes() for n in names}
    _crash_on_fsync(monkeypatch)
    with pytest.raises(OSError, match="simulated crash"):
        train(cfg.updated({"training.seed": 1}), graphs=graphs, progress=False, out_dir=tmp_path)
    monkeypatch.undo()
    for n in names:
        assert (tmp_path / n).read_bytes() == before[n], n
    assert safe_torch_load(tmp_path / "last.pt")["epoch"] == 2
    assert not list(tmp_path.glob(".*.tmp"))


# --------------------------------------------------------------------------- reproducibility


def test_same_seed_gives_identical_metrics_and_weights(graphs):
    a = train(tiny(), graphs=graphs, progress=False)
    b = train(tiny(), graphs=graphs, progress=False)
    assert_same_run(a, b)
    c = train(tiny(training__seed=1), graphs=graphs, progress=False)
    assert any(not torch.equal(v, c.model.state_dict()[k]) for k, v in a.model.state_dict().items())


def test_summary_records_seed_versions_and_config(graphs, reference):
    import numpy as np
    import torch_geometric

    _, out = reference
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seed"] == tiny().training.seed
    assert summary["config"] == tiny().to_dict()
    assert Config.from_dict(summary["config"]) == tiny()
    versions = summary["versions"]
    assert versions == environment_info()
    assert versions["torch"] == torch.__version__
    assert versions["torch_geometric"] == torch_geometric.__version__
    assert versions["numpy"] == np.__version__
    assert versions["python"] == ".".join(map(str, sys.version_info[:3]))
