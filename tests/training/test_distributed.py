"""Multi-process training: ``torchrun --nproc-per-node 2 -m gatrank train`` (gloo on CPU) against
the same run in one process, and :mod:`gatrank.training.distributed` outside torchrun."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gatrank.datasets import write_dataset
from gatrank.training import distributed
from gatrank.training.checkpoint import read_checkpoint

TOLERANCE = 0.1
"""How far a 2-process run's held-out Spearman and pairwise accuracy may be from one process's:
pairs form within each process's half of a batch, so the runs are close, not identical."""

CONFIG = """\
training:
  epochs: 15
  batch_size: 32
  patience: 0
  learning_rate: 3e-3
  log_every: 10
"""


def test_outside_torchrun_everything_is_a_noop(monkeypatch):
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    di = distributed.setup(torch.device("cpu"))
    assert (di.rank, di.world_size, di.enabled, di.is_main) == (0, 1, False, True)
    assert not torch.distributed.is_initialized()
    assert distributed.all_reduce_sum([1.5, 2.0], torch.device("cpu")) == [1.5, 2.0]
    assert distributed.any_flag(True, torch.device("cpu")) is True
    distributed.barrier()  # returns at once


def test_a_partial_torchrun_environment_is_named(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(RuntimeError, match="MASTER_ADDR is not set: launch with torchrun"):
        distributed.setup(torch.device("cpu"))
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE='two' is not an integer"):
        distributed.setup(torch.device("cpu"))


def _train(cmd_prefix: list[str], manifest: Path, cfg: Path, out: Path, *extra: str):
    cmd = [*cmd_prefix, "-m", "gatrank", "train", "--manifest", str(manifest), "--config",
           str(cfg), "--out", str(out), "--no-progress", "--no-baseline", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_two_processes_reach_the_metrics_of_one(tmp_path):
    manifest = write_dataset("synthetic", tmp_path / "syn", n=256)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(CONFIG)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc-per-node", "2"]
    one = _train([sys.executable], manifest, cfg, tmp_path / "one")
    two = _train(torchrun, manifest, cfg, tmp_path / "two")
    assert one.returncode == 0, one.stderr[-3000:]
    assert two.returncode == 0, two.stdout[-2000:] + two.stderr[-3000:]
    # only rank 0 reports and writes: one summary line, one record per logged epoch
    assert two.stdout.count("full run completed") == 1
    assert "distributed: 2 processes (gloo), 16 graphs per process and step" in two.stdout
    logged = [json.loads(line)["epoch"]
              for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert logged == [1, 10, 15]
    s1 = json.loads((tmp_path / "one" / "summary.json").read_text())
    s2 = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert s1["distributed"] is None
    assert s2["distributed"] == {"world_size": 2, "backend": "gloo", "batch_size_per_process": 16}
    assert s2["split_sizes"] == s1["split_sizes"] and s2["epochs_run"] == 15
    for key in ("spearman", "pairwise_accuracy"):
        assert s1["test"][key] > 0.5, s1["test"]
        assert abs(s2["test"][key] - s1["test"][key]) <= TOLERANCE, (key, s1["test"], s2["test"])
    # the checkpoint holds the bare model (no DDP "module." prefix): it loads where one-process
    # checkpoints do
    w1 = read_checkpoint(tmp_path / "one" / "best.pt")["state_dict"]
    w2 = read_checkpoint(tmp_path / "two" / "best.pt")["state_dict"]
    assert list(w2) == list(w1)
    assert not all(torch.equal(w1[k], w2[k]) for k in w1)  # it trained on its own trajectory


@pytest.mark.slow
def test_a_batch_too_small_to_share_is_refused(tmp_path):
    manifest = write_dataset("synthetic", tmp_path / "syn", n=64)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("training:\n  epochs: 1\n  batch_size: 2\n")
    run = _train([sys.executable, "-m", "torch.distributed.run", "--standalone",
                  "--nproc-per-node", "2"], manifest, cfg, tmp_path / "out")
    assert run.returncode != 0
    assert ("training.batch_size=2 over 2 processes leaves 1 graph(s) per process"
            in run.stdout + run.stderr)
    # the workers print the message, not a traceback (torchrun adds its own ChildFailedError)
    assert "gatrank train: ValueError:" in run.stderr
    assert "gatrank/training/" not in run.stderr
