"""The process around a run: seeds, the device, torch threads, and the environment a run
records. One of each; every other module imports them from here."""

from __future__ import annotations

import platform
import random

import numpy as np
import torch

from gatrank import __version__

__all__ = ["set_seed", "resolve_device", "environment_info"]


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


def environment_info() -> dict[str, str]:
    """Versions stored in every run summary, for reproducibility."""
    import scipy
    import torch_geometric

    return {
        "gatrank": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_geometric": torch_geometric.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "platform": platform.platform(),
    }
