"""The checkpoint format: a resume refuses a checkpoint of another config, data, model or loss;
checkpoints (and every other file) are written atomically, so a crash while writing one keeps the
previous file."""

from __future__ import annotations

import pytest
import torch
from tiny_training import Loss, tiny

from gatrank.data import safe_torch_load
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


def test_crash_while_saving_a_checkpoint_keeps_the_old_one(graphs, tmp_path, monkeypatch,
                                                          crash_on_fsync):
    cfg = tiny(training__epochs=2, training__patience=0)
    train(cfg, graphs=graphs, progress=False, out_dir=tmp_path)
    names = ("last.pt", "best.pt", "summary.json")
    before = {n: (tmp_path / n).read_bytes() for n in names}
    crash_on_fsync(monkeypatch)
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
    run_keys = ["config", "model_spec", "loss_spec", "model_name", "in_channels", "edge_dim",
                "splits", "data_fingerprint", "status"]
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
