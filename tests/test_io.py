"""Atomic writes: a write that fails half way leaves the previous file as it was."""

from __future__ import annotations

import pytest
import torch

from gatrank.io import atomic_torch_save, atomic_write_text, write_json


@pytest.mark.parametrize("writer", ["text", "json", "torch"])
def test_failed_write_keeps_the_previous_file(tmp_path, monkeypatch, writer, crash_on_fsync):
    path = tmp_path / "file"
    write = {
        "text": lambda v: atomic_write_text(path, v * 1000),
        "json": lambda v: write_json(path, {"v": v}),
        "torch": lambda v: atomic_torch_save(path, {"v": torch.full((1000,), float(len(v)))}),
    }[writer]
    write("old")
    before = path.read_bytes()
    with monkeypatch.context() as m:
        crash_on_fsync(m)
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
