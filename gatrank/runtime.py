"""The process around a run: seeds, the device, torch threads, and the environment a run
records. One of each; every other module imports them from here."""

from __future__ import annotations

import os
import platform
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import scipy
import torch
import torch_geometric

from gatrank import __version__

__all__ = ["set_seed", "resolve_device", "torch_threads", "environment_info", "package_dirs"]


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch so a CPU run is repeatable."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"training.device={name!r} but CUDA is not available here; use 'auto'")
    return torch.device(name)


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch threads (``None``/0: leave them as they are), then
    restore the previous count."""
    previous = torch.get_num_threads()
    if n and n != previous:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


def environment_info() -> dict[str, str]:
    """Versions stored in every run summary, for reproducibility."""
    return {
        "gatrank": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_geometric": torch_geometric.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "platform": platform.platform(),
    }


def package_dirs(*modules: Any) -> tuple[str, ...]:
    """The folders of ``modules`` (packages, or single-file modules: their file), each as
    imported and resolved, ending in ``os.sep`` for a folder: frames name files by the path
    they were imported from, so ``frame.f_code.co_filename.startswith(package_dirs(torch))``
    tells library internals from the caller's code."""
    out: set[str] = set()
    for m in modules:
        for f in (m.__file__, os.path.realpath(m.__file__)):
            out.add(os.path.dirname(f) + os.sep if os.path.basename(f) == "__init__.py" else f)
    return tuple(out)
