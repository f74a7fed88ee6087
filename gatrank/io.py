"""Atomic file writes (a crash mid-write leaves the previous file intact); JSON lines read back."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["atomic_write_bytes", "atomic_write_text", "write_if_changed", "write_json",
           "append_jsonl", "read_jsonl"]

logger = logging.getLogger(__name__)


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    _atomic(Path(path), lambda fh: fh.write(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_if_changed(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` unless it holds those bytes already; returns ``path``.

    Safe to call from several threads or processes at once: each write goes to its own temporary
    file renamed over the target, so a reader sees the old file or the new one, never a part.
    """
    path = Path(path)
    try:
        same = path.stat().st_size == len(data) and path.read_bytes() == data
    except OSError:
        same = False
    if not same:
        logger.debug("writing %s (%d bytes)", path, len(data))
        atomic_write_bytes(path, data)
    return path


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "item") and callable(obj.item):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically (NumPy/torch scalars and paths allowed)."""
    atomic_write_text(path, json.dumps(obj, indent=2, default=_jsonable, allow_nan=True) + "\n")


def append_jsonl(path: str | Path, records: Iterable[dict]) -> None:
    """Append one JSON object per line (used for the live ``metrics.jsonl``)."""
    with open(path, "a", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, default=_jsonable) + "\n")


def read_jsonl(path: str | Path) -> list[dict]:
    """The records of a JSON-lines file (what :func:`append_jsonl` writes), in order; record
    ``k`` is line ``k + 1`` (only a trailing newline is allowed, no blank line in between).

    Raises:
        FileNotFoundError: naming the file.
        ValueError: naming the file and the line that is not one JSON object.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    records = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}, line {line_no}: not valid JSON ({exc.msg}, column "
                             f"{exc.colno}): {line[:80]!r}") from None
        if not isinstance(rec, dict):
            raise ValueError(f"{path}, line {line_no}: a JSON {type(rec).__name__}, not one "
                             "record (an object {...} per line)")
        records.append(rec)
    return records

