"""The loop's state across an interruption: Ctrl-C, SIGTERM or a crash keeps the state after the
last complete epoch, and resuming from it equals the uninterrupted run exactly (the oracle is the
same run without the interruption: on CPU, with the same seed, the final weights, optimizer
state, RNG states, history and summary must be *equal*, not close). The tiny config early-stops
at epoch 7 with its best epoch at 4, so the early-stopping counter and the best-so-far state both
matter to the outcome."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from tiny_training import Loss, StopAt, assert_same_run, tiny, train_batches

from gatrank.cli import main
from gatrank.training import train
from gatrank.training.checkpoint import read_checkpoint
from gatrank.training.state import LoopState

pytestmark = pytest.mark.usefixtures("one_thread")


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
    ckpt = read_checkpoint(tmp_path / "last.pt")
    assert ckpt["epoch"] == stop_epoch - 1 and ckpt["status"] == "interrupted"
    assert len(ckpt["metrics"]) == stop_epoch - 1
    resumed = train(tiny(), graphs=graphs, progress=False, out_dir=tmp_path,
                    resume=tmp_path / "last.pt")
    assert resumed.summary["resumed_from"] == str(tmp_path / "last.pt")
    assert_same_run(ref, resumed, ref_out, tmp_path)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(ln)["epoch"] for ln in lines] == [r["epoch"] for r in ref.history]


def test_interrupt_mid_epoch_drops_the_partial_epoch(graphs, tmp_path):
    per_epoch = train_batches(graphs, tiny())
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


@pytest.mark.slow
def test_sigterm_subprocess_saves_and_resumes(manifest, tmp_path):
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
    ckpt = read_checkpoint(run / "last.pt")
    done = ckpt["epoch"]
    assert ckpt["status"] == "interrupted" and done >= 3 and len(ckpt["metrics"]) == done
    assert json.loads((run / "summary.json").read_text())["status"] == "interrupted"

    assert main(["train", "--resume", str(run / "last.pt"), "--epochs", str(done + 2),
                 "--no-progress", "--no-baseline", "-q"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_run"] == done + 2
    epochs = [json.loads(ln)["epoch"] for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, done + 3))


def _loop_state() -> LoopState:
    net = torch.nn.Linear(3, 1)
    return LoopState(net=net, optimizer=torch.optim.Adam(net.parameters(), lr=0.1),
                     loader_gen=torch.Generator().manual_seed(0), device=torch.device("cpu"),
                     t_start=time.perf_counter())


def test_best_epoch_and_early_stop_count_validated_epochs():
    st = _loop_state()
    for epoch, val in enumerate([0.2, 0.5, 0.5, 0.4], start=1):
        st.epoch = epoch
        st.update_best(val)
        assert not st.update_early_stop(patience=3, validated=True)
    assert (st.best_epoch, st.best_val_spearman, st.epochs_since_best) == (2, 0.5, 2)
    assert st.stop_reason == ""
    st.epoch = 5
    assert not st.update_best(0.1)
    assert st.update_early_stop(patience=3, validated=True)
    assert st.stop_reason == "early stop: no better validation Spearman for 3 epochs"
    assert not st.update_early_stop(patience=0, validated=True)  # patience 0: never
    assert not st.update_early_stop(patience=3, validated=False)  # nothing validated


def test_restore_undoes_everything_after_the_snapshot():
    st = _loop_state()
    st.epoch = 1
    st.update_best(0.3)
    st.history.append({"epoch": 1})
    snap = st.snapshot()
    weights = {k: v.clone() for k, v in st.net.state_dict().items()}
    st.net(torch.ones(4, 3)).sum().backward()
    st.optimizer.step()
    st.epoch = 2
    st.update_best(0.9)
    st.skipped_steps, st.stop_reason = 3, "x"
    st.history.append({"epoch": 2})
    st.restore(snap)
    assert snap.epoch == 1 and snap.finite
    assert all(torch.equal(v, weights[k]) for k, v in st.net.state_dict().items())
    assert st.optimizer.state_dict()["state"] == {}
    assert (st.best_epoch, st.best_val_spearman, st.skipped_steps, st.stop_reason) == (
        1, 0.3, 0, "")
    assert st.history == [{"epoch": 1}]
