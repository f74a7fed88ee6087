"""Loading torch files without running pickled code: an allowlist of PyG data classes."""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch_geometric.data import Data
from torch_geometric.data.data import DataEdgeAttr, DataTensorAttr
from torch_geometric.data.storage import EdgeStorage, GlobalStorage, NodeStorage

from gatrank.data.problems import UnsafeFileError

__all__ = ["safe_torch_load"]

_SAFE_GLOBALS = [Data, DataEdgeAttr, DataTensorAttr, GlobalStorage, NodeStorage, EdgeStorage]


def safe_torch_load(path: str | Path, *, extra_globals: Sequence[Any] = ()) -> object:
    """``torch.load`` with ``weights_only=True`` and an explicit allowlist of PyG data classes.

    Never falls back to ``weights_only=False``: a file that needs anything outside the allowlist
    (plus ``extra_globals``, e.g. a checkpoint's config dataclass) raises
    :class:`UnsafeFileError` (a ``ValueError``) and nothing in it is executed. Tensors land on CPU.
    """
    path = Path(path)
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
