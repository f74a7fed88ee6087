"""Atomic writes: a write that fails half way leaves the previous file as it was."""

from __future__ import annotations

import pytest

from gatrank.io import atomic_write_bytes, atomic_write_text, write_json


@pytest.mark.parametrize("writer", ["text", "json", "bytes"])
def test_failed_write_keeps_the_previous_file(tmp_path, monkeypatch, writer, crash_on_fsync):
    path = tmp_path / "file"
    write = {
        "text": lambda v: atomic_write_text(path, v * 1000),
        "json": lambda v: write_json(path, {"v": v}),
        "bytes": lambda v: atomic_write_bytes(path, v.encode() * 1000),
    }[writer]
    write("old")
    before = path.read_bytes()
    with monkeypatch.context() as m:
        crash_on_fsync(m)
        with pytest.raises(OSError, match="simulated crash"):
            write("newer")
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["file"]  # no temporary file left

