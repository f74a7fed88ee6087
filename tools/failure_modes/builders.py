"""Writing bad inputs into a case folder, and the ``gatrank`` arguments that meet them."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from gatrank.cli import main

__all__ = ["MARKER"]

MARKER = "PWNED"
"""File a malicious payload would create in its case folder; its absence proves it never ran."""

_TINY = (
    "model:\n  hidden_dim: 8\n  heads: 2\n  num_layers: 1\n"
    "training:\n  batch_size: 4\n  log_every: 1\n  device: cpu\n"
)



def _x(num_nodes: int, width: int = 2, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(num_nodes, width, generator=gen)


def _chain(num_nodes: int) -> torch.Tensor:
    """Undirected path 0-1-...-(n-1), both directions: ``[2, 2(n-1)]``."""
    a = torch.arange(num_nodes - 1)
    return torch.stack([torch.cat([a, a + 1]), torch.cat([a + 1, a])])


def _pt(folder: Path, name: str, x: torch.Tensor | None = None,
        edge_index: torch.Tensor | None = None, seed: int = 0) -> str:
    x = _x(4, seed=seed) if x is None else x
    torch.save({"x": x, "edge_index": _chain(x.shape[0]) if edge_index is None else edge_index},
               folder / name)
    return name


def _good(folder: Path, n: int = 4) -> list[str]:
    """``n`` valid graph files g0.pt ... and their manifest rows ``id,y,path``."""
    return [f"g{i},{1.0 + i},{_pt(folder, f'g{i}.pt', seed=i)}" for i in range(n)]


def _manifest(folder: Path, text: str | bytes, name: str = "manifest.csv") -> Path:
    path = folder / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8", newline="")
    return path


def _rows(folder: Path, *bad: str, header: str = "id,y,path") -> Path:
    """A manifest of four good rows followed by ``bad`` rows (so bad rows start on line 6)."""
    pad = "," * (header.count(",") - 2)  # empty cells for columns after id,y,path
    good = [row + pad for row in _good(folder)]
    return _manifest(folder, "\n".join([header, *good, *bad]) + "\n")


def _train(folder: Path, manifest: Path | str, *extra: str) -> list[str]:
    config = folder / "tiny.yaml"
    config.write_text(_TINY)
    args = ["train", "--manifest", str(manifest), "--no-progress", "--no-baseline",
            "--epochs", "1", *extra]
    return args if "--config" in extra else [*args, "--config", str(config)]


def _check(manifest: Path | str, *extra: str) -> list[str]:
    return ["check-data", "--manifest", str(manifest), *extra]


class _Exploit:
    """Unpickling this runs code that creates ``MARKER`` in the folder."""

    def __init__(self, folder: Path):
        self.target = str(folder.resolve() / MARKER)

    def __reduce__(self):
        return (exec, (f"open({self.target!r}, 'w').write('payload ran')",))


def _evil_graph(folder: Path) -> list[str]:
    torch.save({"x": _Exploit(folder), "edge_index": _chain(4)}, folder / "evil.pt")
    return _train(folder, _rows(folder, "evil,9,evil.pt"))


def _evil_checkpoint(folder: Path) -> Path:
    """A checkpoint in gatrank 0.1's format (one ``torch.save`` dict), with a payload."""
    path = folder / "last.pt"
    torch.save({"state_dict": {}, "config": {}, "resume": _Exploit(folder)}, path)
    return path


def _cut_checkpoint(folder: Path) -> Path:
    """A run's best.pt missing its last bytes, as a copy cut short leaves it."""
    path = _trained_run(folder).parent / "best.pt"
    path.write_bytes(path.read_bytes()[:-4])
    return path


def _evil_yaml(folder: Path) -> list[str]:
    target = str(folder.resolve() / MARKER)
    (folder / "evil.yaml").write_text(
        f"training: !!python/object/apply:exec [\"open({target!r}, 'w')\"]\n"
    )
    return _train(folder, _rows(folder), "--config", str(folder / "evil.yaml"))


def _trained_run(folder: Path) -> Path:
    """A finished one-epoch run in ``folder/run``; returns its last.pt."""
    args = _train(folder, _rows(folder), "--out", str(folder / "run"), "-q")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        if main(args) != 0:
            raise RuntimeError("could not train the run a resume case starts from")
    return folder / "run" / "last.pt"


def _config_case(text: str) -> Callable[[Path], list[str]]:
    def build(folder: Path) -> list[str]:
        (folder / "bad.yaml").write_text(text)
        return _train(folder, _rows(folder), "--config", str(folder / "bad.yaml"))

    return build


def _mixed(folder: Path) -> Path:
    return _rows(folder, "n1,nan,g0.pt", "n2,3,missing.pt", "n3,4,g1.txt")


def _json_graph(folder: Path, name: str, obj: dict) -> str:
    (folder / name).write_text(json.dumps(obj))
    return name


def _npz_pickled(folder: Path) -> list[str]:
    np.savez(folder / "obj.npz", x=np.array([{"a": 1}], dtype=object), edge_index=_chain(4).numpy())
    return _train(folder, _rows(folder, "obj,9,obj.npz"))


def _truncated(folder: Path) -> list[str]:
    _pt(folder, "full.pt")
    data = (folder / "full.pt").read_bytes()
    (folder / "cut.pt").write_bytes(data[: len(data) // 2])
    return _train(folder, _rows(folder, "cut,9,cut.pt"))


def _outside(folder: Path, *extra: str) -> list[str]:
    inner = folder / "data"
    inner.mkdir()
    _pt(folder, "shared.pt")
    m = _manifest(inner, "\n".join(["id,y,path", *_good(inner), "out,9,../shared.pt"]) + "\n")
    return _check(m, *extra)


def _tiny_with(folder: Path, training_lines: str) -> Path:
    path = folder / "changed.yaml"
    path.write_text(_TINY.replace("training:\n", "training:\n" + training_lines))
    return path


def _bad_json(folder: Path) -> list[str]:
    (folder / "bad.json").write_text('{"x": [[1, 2], ')
    return _train(folder, _rows(folder, "bad,9,bad.json"))

