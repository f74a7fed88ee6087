"""The checkpoint format: a resume refuses a checkpoint of another config, data, model or loss;
checkpoints (and every other file) are written atomically, so a crash while writing one keeps the
previous file; every entry reads back exactly, from safetensors and JSON that unpickle nothing,
and gatrank 0.1's torch.save checkpoints still load and resume bitwise."""

from __future__ import annotations

import dataclasses
import json
import math
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file as st_save_file
from tiny_training import Loss, StopAt, assert_same_run, tiny

from gatrank.cli import main
from gatrank.config import Config
from gatrank.model import build_model
from gatrank.training import checkpoint_config, train
from gatrank.training.checkpoint import (
    Progress,
    RunInfo,
    Snapshot,
    load_model,
    load_resume,
    read_checkpoint,
    snapshot,
    write_checkpoint,
)

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
    assert read_checkpoint(tmp_path / "last.pt")["epoch"] == 2
    assert not list(tmp_path.glob(".*.tmp"))


def test_the_layout_is_the_documented_one(reference):
    """The keys (and their order) old checkpoints were written with: old files keep loading."""
    _, out = reference
    run_keys = ["config", "model_spec", "loss_spec", "model_name", "in_channels", "edge_dim",
                "splits", "data_fingerprint", "status"]
    last, best = read_checkpoint(out / "last.pt"), read_checkpoint(out / "best.pt")
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


# --------------------------------------------------------------------------- the on-disk format


class Payload:
    """Unpickling this creates the marker file (a stand-in for any code an attacker wants)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('payload ran')",))


def _run_info(config: Config | None = None) -> RunInfo:
    return RunInfo(config=config or tiny(), model_spec="gat", loss_spec="", model_name="gat",
                   in_channels=3, splits={"train": [0, 2], "val": [1], "test": []},
                   data_fingerprint="f" * 16)


def _assert_same(a, b, where: str = "") -> None:
    """Equal values of the same types all the way down; tensors equal in dtype, shape and
    bits (NaN-free here), containers in order and key types."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, torch.Tensor):
        assert (a.dtype, a.shape) == (b.dtype, b.shape) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert list(a) == list(b) and [type(k) for k in a] == [type(k) for k in b], where
        for k in a:
            _assert_same(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}/{i}")
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), where
    else:
        assert a == b, where


def _trained_snapshot() -> tuple[Snapshot, torch.nn.Module]:
    """A snapshot with every kind of entry: Adam state (int keys, 0-dim steps, tuple betas),
    the RNG states, NaN and -inf in the history, and best weights that are views of one
    storage (tied, overlapping, strided)."""
    torch.manual_seed(0)
    net = build_model(3, tiny().model, "gat")
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(2):
        opt.zero_grad()
        sum((p ** 2).sum() for p in net.parameters()).backward()
        opt.step()
    random.random(), np.random.rand()
    wide = torch.arange(12.0).view(3, 4)
    progress = Progress(
        history=[{"epoch": 1, "loss": float("nan"), "spearman": 0.25, "grad_norm": math.inf,
                  "per_layer": {"convs.0": 1e-300, "$odd key": -0.0}}],
        best_epoch=1, best_state={"col": wide[:, 1], "again": wide[:, 1], "row": wide[1],
                                  "whole": wide, "tied": wide, "flag": wide > 3,
                                  "half": wide.to(torch.bfloat16), "none": torch.empty(0, 2)},
        stop_reason="early stop", skipped_steps=2)
    return snapshot(3, net, opt, progress, 1.5, torch.Generator().manual_seed(7)), net


def test_every_part_round_trips_exactly(tmp_path):
    snap, net = _trained_snapshot()
    write_checkpoint(tmp_path / "last.pt", snap.entries, _run_info(), "running")
    got = read_checkpoint(tmp_path / "last.pt")
    run_entries = {"config": tiny().to_dict(), "model_spec": "gat", "loss_spec": "",
                   "model_name": "gat", "in_channels": 3, "edge_dim": None,
                   "splits": {"train": [0, 2], "val": [1], "test": []},
                   "data_fingerprint": "f" * 16, "status": "running"}
    _assert_same(got, {**snap.entries, **run_entries})
    assert isinstance(got["optimizer"]["param_groups"][0]["betas"], tuple)
    assert list(got["optimizer"]["state"]) == list(range(len(list(net.parameters()))))
    assert Config.from_dict(got["config"]) == tiny()


def test_the_file_is_plain_safetensors_and_json(tmp_path):
    """What someone without gatrank reads: safetensors' own loader and a strict JSON parser."""
    snap, net = _trained_snapshot()
    write_checkpoint(tmp_path / "last.pt", snap.entries, _run_info(), "running")
    with safe_open(tmp_path / "last.pt", framework="pt") as f:
        meta, names = f.metadata(), set(f.keys())
        w = f.get_tensor("state_dict/convs.0.lin.weight").clone()  # the file is mapped
    assert (meta["format"], meta["version"]) == ("gatrank-checkpoint", "2")

    def no_constants(name):
        raise AssertionError(f"{name} is not JSON")

    entries = json.loads(meta["entries"], parse_constant=no_constants)
    assert entries["metrics"][0]["loss"] == {"$float": "nan"}
    assert entries["metrics"][0]["per_layer"] == {"$dict": [["convs.0", 1e-300],
                                                            ["$odd key", -0.0]]}
    assert entries["resume"]["best_val_spearman"] == {"$float": "-inf"}
    name = "state_dict/convs.0.lin.weight"
    assert entries["state_dict"]["convs.0.lin.weight"] == {"$tensor": name}
    assert {"resume/rng/torch", "resume/rng/loader", "optimizer/state/0/exp_avg"} <= names
    assert torch.equal(w, net.state_dict()["convs.0.lin.weight"])


def test_resume_from_an_old_torch_save_checkpoint_is_exact(graphs, reference, tmp_path):
    """gatrank 0.1 wrote the same entries with torch.save: they are read (with the allowlist)
    and resume bitwise, and every reader takes them."""
    ref, ref_out = reference
    train(tiny(), graphs=graphs, progress=False, out_dir=tmp_path, callbacks=[StopAt(4)])
    old = read_checkpoint(tmp_path / "last.pt")
    torch.save(old, tmp_path / "last.pt")  # the old format, byte for byte what 0.1 wrote
    torch.save(read_checkpoint(ref_out / "best.pt"), tmp_path / "best_old.pt")
    assert (tmp_path / "last.pt").read_bytes()[:2] == b"PK"  # torch's zip container
    _assert_same(read_checkpoint(tmp_path / "last.pt"), old)
    assert checkpoint_config(tmp_path / "last.pt")[0] == tiny()
    net, _, _ = load_model(tmp_path / "best_old.pt")
    for k, v in net.state_dict().items():
        assert torch.equal(v, ref.model.state_dict()[k]), k
    resumed = train(tiny(), graphs=graphs, progress=False, out_dir=tmp_path,
                    resume=tmp_path / "last.pt")
    assert_same_run(ref, resumed, ref_out, tmp_path)
    assert (tmp_path / "last.pt").read_bytes()[8:9] == b"{"  # rewritten as safetensors


def test_a_pickle_inside_a_checkpoint_is_never_unpickled(reference, tmp_path, capsys):
    """A payload hidden in a tensor's bytes and in a string entry stays inert data for every
    reader; the control shows the same bytes do run when unpickled."""
    _, out = reference
    marker = tmp_path / "payload_ran"
    payload = pickle.dumps(Payload(marker))
    ckpt = read_checkpoint(out / "last.pt")
    ckpt["payload"] = torch.frombuffer(bytearray(payload), dtype=torch.uint8)
    ckpt["resume"]["stop_reason"] = payload.decode("latin-1")
    run = _run_info(Config.from_dict(ckpt["config"]))
    run = dataclasses.replace(run, in_channels=ckpt["in_channels"], splits=ckpt["splits"],
                              data_fingerprint=ckpt["data_fingerprint"])
    path = tmp_path / "last.pt"
    write_checkpoint(path, {k: v for k, v in ckpt.items() if k not in vars(run)}, run, "running")
    assert payload in path.read_bytes()
    assert read_checkpoint(path)["payload"].numpy().tobytes() == payload
    assert load_model(path)[2]["resume"]["stop_reason"] == payload.decode("latin-1")
    assert checkpoint_config(path)[0] == tiny()
    assert main(["eval", "--checkpoint", str(path), "--manifest", str(out / "none.csv")]) != 0
    assert "none.csv" in capsys.readouterr().err  # past the checkpoint, to the missing manifest
    assert not marker.exists()
    pickle.loads(read_checkpoint(path)["payload"].numpy().tobytes())  # noqa: S301 - the control
    assert marker.exists()


def test_an_entry_a_checkpoint_cannot_hold_names_it_and_keeps_the_old_file(tmp_path):
    snap, _ = _trained_snapshot()
    write_checkpoint(tmp_path / "last.pt", snap.entries, _run_info(), "running")
    before = (tmp_path / "last.pt").read_bytes()
    bad = {**snap.entries, "metrics": [{"epoch": 1, "when": object()}]}
    with pytest.raises(TypeError, match=r"entry /metrics/0/when is a object, which a checkpoint "
                                         r"cannot hold"):
        write_checkpoint(tmp_path / "last.pt", bad, _run_info(), "running")
    assert (tmp_path / "last.pt").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_damaged_foreign_and_newer_checkpoints_are_named(reference, tmp_path):
    _, out = reference
    data = (out / "best.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut.pt is a damaged gatrank checkpoint"):
        load_model(tmp_path / "cut.pt")
    st_save_file({"w": torch.ones(2)}, tmp_path / "hub.pt", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"hub.pt is not a gatrank checkpoint \(a safetensors"):
        checkpoint_config(tmp_path / "hub.pt")
    st_save_file({"w": torch.ones(2)}, tmp_path / "new.pt",
                 metadata={"format": "gatrank-checkpoint", "version": "3", "entries": "{}"})
    with pytest.raises(ValueError, match=r"format version '3'; this gatrank reads versions up "
                                         r"to 2: upgrade gatrank"):
        load_model(tmp_path / "new.pt")
