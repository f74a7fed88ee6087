"""Loading torch files without running pickled code: an allowlist of PyG data classes, and a
torch whose ``weights_only`` unpickler has no known hole."""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from packaging.version import InvalidVersion, Version
from torch_geometric.data import Data
from torch_geometric.data.data import DataEdgeAttr, DataTensorAttr
from torch_geometric.data.storage import EdgeStorage, GlobalStorage, NodeStorage

from gatrank.data.problems import UnsafeFileError

__all__ = ["SAFE_TORCH", "UnsafeTorchError", "safe_torch_load", "torch_load_cves"]

_SAFE_GLOBALS = [Data, DataEdgeAttr, DataTensorAttr, GlobalStorage, NodeStorage, EdgeStorage]

SAFE_TORCH = "2.10"
"""The oldest torch release whose ``torch.load(weights_only=True)`` has no known hole (the
floor pyproject.toml and environment.yml require)."""

# (CVE, the torch release that fixed it, what a crafted file can do to an older one)
_CVES = (
    ("CVE-2025-32434", "2.6", "bypass weights_only and run code"),
    ("CVE-2026-24747", "2.10", "corrupt memory, up to running code"),
)


class UnsafeTorchError(UnsafeFileError):
    """The installed torch cannot load a pickle-based file safely; nothing was read."""


def torch_load_cves(version: str | None = None) -> list[str]:
    """The CVEs of ``torch.load(weights_only=True)`` that torch ``version`` (default: the one
    imported) is open to: ``[]`` from 2.10 on. Local builds (``2.10.0+cpu``) count as their
    release; pre-releases (``2.10.0a0``, nightlies) as before it; an unreadable version as open
    to all of them."""
    try:
        v = Version(str(torch.__version__ if version is None else version))
    except InvalidVersion:  # a version nobody can vouch for
        return [cve for cve, _, _ in _CVES]
    return [cve for cve, fixed, _ in _CVES if v < Version(fixed)]


def _refuse_unsafe_torch(path: Path) -> None:
    """Raise :class:`UnsafeTorchError` before reading ``path`` on a torch with a known hole."""
    open_to = torch_load_cves()
    if open_to:
        holes = "; ".join(f"{cve} (a crafted file can {what}; fixed in torch {fixed})"
                          for cve, fixed, what in _CVES if cve in open_to)
        raise UnsafeTorchError(
            f"{path} was NOT loaded: torch {torch.__version__} is older than {SAFE_TORCH}, and "
            f"its torch.load(weights_only=True) is unsafe on files from others: {holes}. "
            f"Upgrade torch: pip install --upgrade 'torch>={SAFE_TORCH}'"
        )


def safe_torch_load(path: str | Path, *, extra_globals: Sequence[Any] = ()) -> object:
    """``torch.load`` with ``weights_only=True`` and an explicit allowlist of PyG data classes.

    Never falls back to ``weights_only=False``: a file that needs anything outside the allowlist
    (plus ``extra_globals``, e.g. a checkpoint's config dataclass) raises
    :class:`UnsafeFileError` (a ``ValueError``) and nothing in it is executed. On a torch older
    than :data:`SAFE_TORCH` nothing is read: :class:`UnsafeTorchError` names the CVEs and the
    upgrade. Tensors land on CPU.
    """
    path = Path(path)
    _refuse_unsafe_torch(path)
    try:
        with torch.serialization.safe_globals([*_SAFE_GLOBALS, *extra_globals]), \
                warnings.catch_warnings():
            # raw pickles (not torch.save files) trigger a protocol warning before the refusal
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        detail = next((ln for ln in lines if "GLOBAL" in ln or "Unsupported" in ln),
                      lines[-1] if lines else "")
        raise UnsafeFileError(
            f"{path} holds pickled objects outside gatrank's allowlist of PyG data classes, so "
            f"it was NOT loaded (unpickling it could run arbitrary code). torch says: {detail}"
        ) from None
