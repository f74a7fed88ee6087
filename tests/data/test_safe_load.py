"""gatrank.data.safe_load, and every file gatrank reads: pickles that would run code are
refused, and the code never runs; on a torch whose weights_only unpickler has a known hole
(faked here through ``torch.__version__``), no pickle-based file is read at all.

Every payload here writes a marker file when unpickled or constructed. The positive controls
load the same files the unsafe way and see the marker appear, so the tests below cannot pass
merely because the payload was broken.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import pytest
import torch
import yaml
from tiny_graphs import EI4, X4, save_pt, write_manifest
from torch_geometric.data import Data

from gatrank.cli import main
from gatrank.config import ConfigError, load_config
from gatrank.data import DataError, UnsafeFileError, UnsafeTorchError, load_graphs, safe_torch_load
from gatrank.data.safe_load import torch_load_cves
from gatrank.evaluate import load_checkpoint
from gatrank.model import build_model
from gatrank.training import checkpoint_config, train
from gatrank.training.checkpoint import (
    RunInfo,
    best_checkpoint,
    read_checkpoint,
    write_checkpoint,
)
from tools.failure_modes import MARKER

PACKAGE = Path(__file__).resolve().parents[2] / "gatrank"


class Payload:
    """Unpickling this creates the marker file (a stand-in for any code an attacker wants)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('payload ran')",))


def _chain() -> torch.Tensor:
    return torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])


@pytest.fixture
def evil(tmp_path) -> dict[str, Path]:
    """One malicious file of every kind gatrank reads, all aimed at the same marker."""
    marker = tmp_path / MARKER
    files = {
        "graph": tmp_path / "evil_graph.pt",
        "raw_pickle": tmp_path / "evil_raw.pt",
        "checkpoint": tmp_path / "evil_ckpt.pt",
        "yaml": tmp_path / "evil.yaml",
    }
    torch.save({"x": Payload(marker), "edge_index": _chain()}, files["graph"])
    with open(files["raw_pickle"], "wb") as fh:  # a bare pickle, not torch's zip format
        pickle.dump(Payload(marker), fh)
    torch.save({"state_dict": {}, "config": {}, "in_channels": 2, "resume": Payload(marker)},
               files["checkpoint"])
    files["yaml"].write_text(
        f"training: !!python/object/apply:exec [\"open({str(marker)!r}, 'w')\"]\n"
    )
    return {"marker": marker, **files}


def test_controls_the_payloads_really_run_when_loaded_unsafely(evil):
    for name in ("graph", "checkpoint"):
        evil["marker"].unlink(missing_ok=True)
        torch.load(evil[name], weights_only=False)
        assert evil["marker"].exists(), name
    evil["marker"].unlink()
    with open(evil["raw_pickle"], "rb") as fh:
        pickle.load(fh)  # noqa: S301 - the point of the control
    assert evil["marker"].exists()
    evil["marker"].unlink()
    yaml.unsafe_load(evil["yaml"].read_text())
    assert evil["marker"].exists()


def _good_graphs(folder: Path) -> list[str]:
    rows = []
    for i in range(4):
        torch.save({"x": torch.rand(3, 2), "edge_index": _chain()}, folder / f"g{i}.pt")
        rows.append(f"g{i},{i},g{i}.pt")
    return rows


def test_malicious_graph_files_are_refused_by_the_loader_and_the_cli(evil, tmp_path, capsys):
    rows = _good_graphs(tmp_path)
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("\n".join(["id,y,path", *rows, "e1,9,evil_graph.pt",
                                   "e2,9,evil_raw.pt"]) + "\n")
    gs = load_graphs(manifest, on_error="skip")
    assert sorted(p.code for p in gs.dropped) == ["unsafe_file", "unsafe_file"]
    assert len(gs) == 4
    assert main(["check-data", "--manifest", str(manifest)]) == 1
    assert main(["train", "--manifest", str(manifest), "--no-progress", "--no-baseline"]) == 1
    err = capsys.readouterr()
    assert "unsafe_file" in err.out and "unsafe_file" in err.err
    assert "NOT loaded" in err.err and "Traceback" not in err.err
    assert not evil["marker"].exists()


@pytest.mark.parametrize("kind", ["checkpoint", "raw_pickle"])
def test_malicious_checkpoints_are_refused_everywhere(evil, tmp_path, capsys, kind):
    path = evil[kind]
    with pytest.raises(UnsafeFileError, match="NOT loaded"):
        load_checkpoint(path)
    with pytest.raises(UnsafeFileError):
        checkpoint_config(path)
    assert main(["eval", "--checkpoint", str(path)]) == 1
    assert main(["train", "--resume", str(path), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.count("unsafe file refused") == 2 and "Traceback" not in err
    assert not evil["marker"].exists()


def test_resume_through_the_api_refuses_a_malicious_checkpoint(evil, tmp_path):
    (tmp_path / "m.csv").write_text("\n".join(["id,y,path", *_good_graphs(tmp_path)]) + "\n")
    gs = load_graphs(tmp_path / "m.csv")
    with pytest.raises(UnsafeFileError):
        train(load_config(), graphs=gs, resume=evil["checkpoint"], progress=False)
    assert not evil["marker"].exists()


def test_yaml_is_read_with_a_safe_loader(evil, capsys):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(evil["yaml"])
    assert main(["train", "--config", str(evil["yaml"])]) == 2
    assert "config error" in capsys.readouterr().err
    assert not evil["marker"].exists()


def test_a_genuine_checkpoint_still_loads_and_evaluates(tmp_path, capsys):
    """The refusals above are not a loader that refuses everything."""
    rows = _good_graphs(tmp_path)
    (tmp_path / "m.csv").write_text("\n".join(["id,y,path,split", *(r + ",train" for r in rows),
                                              "t,5,g0.pt,test", "u,6,g1.pt,test"]) + "\n")
    (tmp_path / "tiny.yaml").write_text("model:\n  hidden_dim: 4\n  heads: 1\n  num_layers: 1\n"
                                        "training:\n  epochs: 1\n  device: cpu\n")
    assert main(["train", "--manifest", str(tmp_path / "m.csv"), "--config",
                 str(tmp_path / "tiny.yaml"), "--out", str(tmp_path / "run"), "--no-progress",
                 "--no-baseline", "-q"]) == 0
    for name in ("best.pt", "last.pt"):
        net, config, ckpt = load_checkpoint(tmp_path / "run" / name)
        assert config.model.hidden_dim == 4 and ckpt["in_channels"] == 2
    assert main(["eval", "--checkpoint", str(tmp_path / "run" / "best.pt"),
                 "--no-baselines"]) == 0
    assert "spearman" in capsys.readouterr().out


def test_package_never_unpickles_unsafely():
    """Every torch.load in gatrank passes weights_only=True; no unsafe YAML or pickle loads."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        for m in re.finditer(r"torch\.load\(([^)]*)\)", text):
            if "weights_only=True" not in m.group(1):
                offenders.append(f"{path.name}: {m.group(0)}")
        for pattern in (r"yaml\.(unsafe_)?load\(", r"yaml\.full_load", r"pickle\.loads?\(",
                        r"allow_pickle=True", r"fs\.torch_load"):
            offenders += [f"{path.name}: {m.group(0)}" for m in re.finditer(pattern, text)]
    assert not offenders



def test_unsafe_pt_file_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"x": Exploit(), "edge_index": EI4}, tmp_path / "evil.pt")
    with open(tmp_path / "evil_pickle.pt", "wb") as f:  # a raw pickle, not a torch zip file
        pickle.dump(Exploit(), f)
    with pytest.raises(UnsafeFileError, match="NOT loaded") as err:
        safe_torch_load(tmp_path / "evil.pt")
    assert str(tmp_path / "evil.pt") in str(err.value) and "allowlist" in str(err.value)
    manifest = write_manifest(tmp_path, "y,path\n1,evil.pt\n2,evil_pickle.pt\n")
    with pytest.raises(DataError) as err:
        load_graphs(manifest)
    assert [p.code for p in err.value.problems] == ["unsafe_file", "unsafe_file"]
    assert not marker.exists()


def test_safe_torch_load_reads_pyg_data(tmp_path):
    save_pt(tmp_path / "g.pt", y=torch.tensor([1.0]))  # the allowlist covers torch.save(Data)
    d = safe_torch_load(tmp_path / "g.pt")
    assert isinstance(d, Data) and torch.equal(d.x, X4) and torch.equal(d.edge_index, EI4)


BOTH = ["CVE-2025-32434", "CVE-2026-24747"]


@pytest.mark.parametrize(("version", "cves"), [
    ("2.5.1", BOTH), ("2.5.1+cpu", BOTH), ("2.2.0", BOTH),
    ("2.6.0", ["CVE-2026-24747"]), ("2.9.1+cu128", ["CVE-2026-24747"]),
    ("2.9.10", ["CVE-2026-24747"]),  # newer than 2.10 as a string, older as a version
    ("2.10.0a0", ["CVE-2026-24747"]),  # a pre-release (a source build) predates the release
    ("2.10.0.dev20251201+cpu", ["CVE-2026-24747"]), ("2.10.0rc2", ["CVE-2026-24747"]),
    ("2.10.0", []), ("2.10.0+cpu", []), ("2.10.1", []), ("2.13.0+cu130", []), ("3.0", []),
    ("parrot", BOTH),  # nobody can vouch for it
])
def test_torch_versions_compare_as_versions(version, cves):
    assert torch_load_cves(version) == cves


def _old_torch(monkeypatch, version: str = "2.5.1+cpu") -> None:
    monkeypatch.setattr(torch, "__version__", version)


def test_an_old_torch_reads_no_graph_file_and_says_why_once(evil, tmp_path, monkeypatch, capsys):
    rows = _good_graphs(tmp_path)
    (tmp_path / "m.csv").write_text("\n".join(["id,y,path", *rows]) + "\n")
    assert len(load_graphs(tmp_path / "m.csv")) == 4  # the control: this torch reads them
    _old_torch(monkeypatch)
    with pytest.raises(UnsafeTorchError) as err:
        safe_torch_load(tmp_path / "g0.pt")
    msg = str(err.value)
    assert msg.startswith(f"{tmp_path / 'g0.pt'} was NOT loaded: torch 2.5.1+cpu is older than "
                          "2.10")
    assert all(cve in msg for cve in BOTH) and "pip install --upgrade 'torch>=2.10'" in msg
    with pytest.raises(UnsafeTorchError, match="CVE-2026-24747"):  # not four dropped rows
        load_graphs(tmp_path / "m.csv", on_error="skip")
    assert main(["check-data", "--manifest", str(tmp_path / "m.csv")]) == 1
    out = capsys.readouterr()
    assert "unsafe file refused" in out.err and "CVE-2025-32434" in out.err
    assert "Traceback" not in out.err and out.err.count("was NOT loaded") == 1
    with pytest.raises(UnsafeTorchError):
        safe_torch_load(evil["graph"])  # refused before torch.load sees it
    assert not evil["marker"].exists()
    _old_torch(monkeypatch, "2.9.1")
    with pytest.raises(UnsafeTorchError) as err:
        safe_torch_load(tmp_path / "g0.pt")
    assert "CVE-2026-24747" in str(err.value) and "CVE-2025-32434" not in str(err.value)


def _checkpoints(folder: Path) -> tuple[Path, Path]:
    """A tiny best.pt in today's format (safetensors) and the same entries in gatrank 0.1's
    (torch.save)."""
    cfg = load_config().updated({"model.hidden_dim": 4, "model.heads": 1,
                                 "model.num_layers": 1})
    net = build_model(2, cfg.model, "gat")
    run = RunInfo(config=cfg, model_spec="gat", loss_spec="", model_name="gat", in_channels=2,
                  splits={"train": [0, 1]}, data_fingerprint="0" * 16)
    new, old = folder / "best.pt", folder / "old_best.pt"
    write_checkpoint(new, best_checkpoint(1, net, torch.optim.Adam(net.parameters()), []), run,
                     "best")
    torch.save(read_checkpoint(new), old)
    return new, old


def test_an_old_torch_refuses_old_checkpoints_and_reads_safetensors_ones(tmp_path, monkeypatch,
                                                                         capsys):
    new, old = _checkpoints(tmp_path)
    want = load_checkpoint(old)[0].state_dict()  # the control: this torch reads both
    _old_torch(monkeypatch)
    for read in (load_checkpoint, checkpoint_config):
        with pytest.raises(UnsafeTorchError, match=r"old_best.pt was NOT loaded: .*"
                                                   r"CVE-2025-32434.*CVE-2026-24747"):
            read(old)
    assert main(["eval", "--checkpoint", str(old)]) == 1
    assert main(["train", "--resume", str(old), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.count("unsafe file refused") == 2 and err.count("torch>=2.10") == 2
    net, config, _ = load_checkpoint(new)  # safetensors: no torch.load, nothing to refuse
    assert config.model.hidden_dim == 4
    for k, v in net.state_dict().items():
        assert torch.equal(v, want[k]), k
