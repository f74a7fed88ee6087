"""The checkpoint format: a resume refuses a checkpoint of another config, data, model or loss;
checkpoints (and every other file) are written atomically, so a crash while writing one keeps the
previous file."""

from __future__ import annotations

import pytest
import torch
from tiny_training import Loss, tiny

import gatrank.io
from gatrank.data import safe_torch_load
from gatrank.io import atomic_torch_save, atomic_write_text, write_json
from gatrank.training import checkpoint_config, train
from gatrank.training.checkpoint import RunInfo, load_model, load_resume

pytestmark = pytest.mark.usefixtures("one_thread")


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


def test_the_layout_is_the_documented_one(reference):
    """The keys (and their order) old checkpoints were written with: old files keep loading."""
    _, out = reference
    run_keys = ["config", "model_spec", "loss_spec", "model_name", "in_channels", "splits",
                "data_fingerprint", "status"]
    last, best = safe_torch_load(out / "last.pt"), safe_torch_load(out / "best.pt")
    assert list(last) == ["state_dict", "optimizer", "epoch", "metrics", "resume", *run_keys]
    assert list(last["resume"]) == ["best_epoch", "best_val_spearman", "best_state",
                                    "epochs_since_best", "skipped_steps", "early_stopped",
                                    "stop_reason", "elapsed_s", "rng"]
    assert list(best) == ["state_dict", "optimizer", "epoch", "metrics", *run_keys]
    assert (last["status"], best["status"]) == ("completed", "best")
    assert (last["model_spec"], last["loss_spec"], last["model_name"]) == ("gat", "", "gat")


def test_every_reader_reads_the_written_file(reference, graphs, tmp_path):
    ref, out = reference
    config, specs = checkpoint_config(out / "last.pt")
    assert config == tiny() and specs == {"model": "gat", "loss": ""}
    net, config, ckpt = load_model(out / "best.pt")
    assert config == tiny() and not net.training
    assert ckpt["epoch"] == ref.summary["best_epoch"]
    for k, v in net.state_dict().items():
        assert torch.equal(v, ref.model.state_dict()[k]), k
    run = RunInfo.of(tiny(), graphs, ref.splits, model=None, model_name="gat", loss=None)
    snap = load_resume(out / "last.pt", run)
    assert snap.epoch == ref.summary["epochs_run"] and snap.finite
    torch.save({"weights": torch.ones(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"other.pt is not a gatrank checkpoint \(no 'state_dict'"):
        load_model(tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"other.pt is not a gatrank checkpoint \(no 'config'"):
        checkpoint_config(tmp_path / "other.pt")
