"""Exceptions raised by the user's own model or loss: which traceback frame is the user's, and the
``user_code_error`` cause that names it, so that the doctor reports a crash in the user's code as
a finding (with the stage and the line) instead of crashing itself.

A frame is the user's when its file holds the user's model or loss (the class, factory or
function given to the doctor), or, for code without a source file of its own (a lambda in a
notebook), when it lies outside gatrank, PyTorch, PyG, the installed packages and the standard
library. An exception
without such a frame is gatrank's own bug and is not turned into a cause.
"""

from __future__ import annotations

import inspect
import linecache
import sysconfig
import traceback
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import torch_geometric
from torch import nn

from gatrank.plugins import load_object

__all__ = [
    "UserFrame",
    "user_files",
    "user_frame",
]

_LIBRARIES = tuple(str(Path(p).resolve()) for p in (
    Path(__file__).resolve().parents[1],  # gatrank
    Path(torch.__file__).parent,
    Path(torch_geometric.__file__).parent,
    sysconfig.get_paths()["stdlib"],
    sysconfig.get_paths()["purelib"],  # installed packages: numpy, pandas, ... (a user's
    sysconfig.get_paths()["platlib"],  # installed package is matched by its file instead)
))


class UserFrame:
    """The user's innermost frame of a traceback: file, line, function and the source line."""

    def __init__(self, frame: traceback.FrameSummary) -> None:
        self.file = frame.filename
        self.line = frame.lineno or 0
        self.function = frame.name
        self.code = (frame.line or linecache.getline(frame.filename, self.line)).strip()

    def __str__(self) -> str:
        code = f": {self.code}" if self.code else ""
        return f"{self.file}, line {self.line}, in {self.function}{code}"

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "function": self.function,
                "code": self.code}


def _source_file(obj: Any) -> str | None:
    """The resolved source file of a class, function or module instance (None: no file)."""
    if isinstance(obj, str):
        if not obj or ":" not in obj:  # "", "gat", "linear": gatrank's own models
            return None
        try:
            obj = load_object(obj, what="object")
        except Exception:  # noqa: BLE001 - an unloadable spec has no frame to match
            return None
    if isinstance(obj, nn.Module):
        obj = type(obj)
    try:
        file = inspect.getsourcefile(obj)
    except TypeError:
        return None
    return str(Path(file).resolve()) if file else None


def user_files(*objs: Any) -> set[str]:
    """The source files of the user's model and loss (import strings, classes, factories,
    functions or module instances; None and gatrank's built-in names are skipped)."""
    return {f for obj in objs if obj is not None and (f := _source_file(obj)) is not None}


def _outside_libraries(filename: str) -> bool:
    if filename.startswith("<frozen") or not filename:
        return False
    try:
        path = str(Path(filename).resolve())
    except OSError:
        return True
    return not path.startswith(_LIBRARIES)


def user_frame(exc: BaseException, files: Iterable[str]) -> UserFrame | None:
    """The innermost frame of ``exc``'s traceback in one of ``files``; failing that, the
    innermost one outside gatrank, PyTorch, PyG, the installed packages and the standard library
    (code typed into a notebook); None when the exception never passed through the user's code."""
    frames = traceback.extract_tb(exc.__traceback__)
    wanted = set(files)
    for frame in reversed(frames):
        try:
            if str(Path(frame.filename).resolve()) in wanted:
                return UserFrame(frame)
        except OSError:
            continue
    for frame in reversed(frames):
        if _outside_libraries(frame.filename):
            return UserFrame(frame)
    return None
