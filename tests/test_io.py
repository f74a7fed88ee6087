"""Atomic writes: a write that fails half way leaves the previous file as it was; a JSON-lines
log reads back as written, a bad line named."""

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


def test_read_jsonl_reads_back_what_append_jsonl_wrote(tmp_path):
    from gatrank.io import append_jsonl, read_jsonl

    path = tmp_path / "metrics.jsonl"
    records = [{"epoch": 1, "loss": float("nan")}, {"epoch": 2, "loss": 0.5, "per": {"a": 1.0}}]
    append_jsonl(path, records[:1])
    append_jsonl(path, records[1:])
    back = read_jsonl(path)
    assert back[1] == records[1] and back[0]["epoch"] == 1 and back[0]["loss"] != back[0]["loss"]


@pytest.mark.parametrize(("text", "error"), [
    ('{"epoch": 1}\n{"epoch": 2\n', r"line 2: not valid JSON"),
    ('{"epoch": 1}\n\n{"epoch": 3}\n', r"line 2: not valid JSON"),
    ('{"epoch": 1}\n[1, 2]\n', r"line 2: a JSON list, not one record"),
])
def test_read_jsonl_names_the_file_and_the_bad_line(tmp_path, text, error):
    from gatrank.io import read_jsonl

    path = tmp_path / "metrics.jsonl"
    path.write_text(text)
    with pytest.raises(ValueError, match=rf"{path}, {error}"):
        read_jsonl(path)
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_jsonl(tmp_path / "missing.jsonl")
