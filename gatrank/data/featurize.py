"""SMILES -> one-hot graphs (PyG's categories), on a process pool, through an on-disk cache.

Pool workers run ``_worker_init`` and ``_mol_codes``, both top-level functions of this module so
that every multiprocessing start method can import them; the pool starts as the graph files'
does (forked on Linux, none inside a daemonic process, see :mod:`gatrank.data.parallel`).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch_geometric
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.utils.smiles import e_map, from_rdmol, x_map

from gatrank.data.parallel import _pool_map, _pool_workers
from gatrank.data.safe_load import safe_torch_load

# RDKit is imported inside the functions that use it, on purpose: it is a heavy import that a
# manifest of graph files (no SMILES) never needs.

logger = logging.getLogger(__name__)

__all__ = ["featurize_smiles", "default_cache_dir", "FEATURIZER_VERSION"]

FEATURIZER_VERSION = "2"
"""Bump when SMILES featurization changes, so old cache files are not reused."""

_POOL_MIN_MOLECULES = 500
_X_SIZES = [len(v) for v in x_map.values()]  # one-hot width of each PyG atom category
_E_SIZES = [len(v) for v in e_map.values()]


def _silence_rdkit() -> None:
    from rdkit import RDLogger  # deferred (see the imports)

    RDLogger.DisableLog("rdApp.*")  # parse errors become DataProblems instead of stderr noise


def _mol_codes(smiles: str) -> tuple[str, str] | tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Category codes of one molecule, or ``(code, message)`` when it cannot be featurized.

    Returns ``x_codes`` uint8 ``[N, 9]``, ``edge_index`` int64 ``[2, E]``, ``e_codes`` uint8
    ``[E, 3]``, the integer columns of PyG's ``from_smiles`` (which is ``MolFromSmiles`` +
    ``from_rdmol``; we parse ourselves because ``from_smiles`` turns bad SMILES into an empty
    molecule instead of failing).
    """
    from rdkit import Chem as chem  # noqa: N813  deferred; callers silence RDKit's logger

    mol = chem.MolFromSmiles(smiles)
    if mol is None:
        raw = chem.MolFromSmiles(smiles, sanitize=False)
        if raw is None:
            return "invalid_smiles", "RDKit cannot parse it (SMILES syntax error)"
        try:
            chem.SanitizeMol(raw)
        except Exception as exc:  # RDKit raises several sanitization exception types
            return "invalid_smiles", f"RDKit rejects it: {exc}"
        return "invalid_smiles", "RDKit rejects it"
    try:
        data = from_rdmol(mol)
    except ValueError as exc:
        return ("unsupported_molecule", "PyG's featurizer has no category for one of its atom "
                f"or bond properties ({exc})")
    return (data.x.numpy().astype(np.uint8), data.edge_index.numpy(),
            data.edge_attr.numpy().astype(np.uint8))


def _one_hot(codes: Tensor, sizes: Sequence[int]) -> Tensor:
    """``[n, k]`` integer category codes -> float32 ``[n, sum(sizes)]`` one-hot."""
    offsets = torch.tensor([0, *np.cumsum(sizes)[:-1].tolist()], dtype=torch.long)
    out = torch.zeros(codes.shape[0], int(sum(sizes)), dtype=torch.float32)
    return out.scatter_(1, codes.long() + offsets, 1.0)


def featurize_smiles(smiles: str) -> Data | None:
    """One molecule as a graph: ``x`` float32 ``[N, 177]``, ``edge_attr`` float32 ``[E, 30]``.

    The integer columns of PyG's ``from_smiles`` one-hot encoded with the sizes in
    ``torch_geometric.utils.smiles.x_map`` / ``e_map``. Returns None when RDKit cannot parse the
    SMILES or PyG has no category for one of its atoms or bonds.
    """
    _silence_rdkit()
    out = _mol_codes(smiles)
    if isinstance(out[0], str):
        logger.debug("cannot featurize %r: %s", smiles, out[1])
        return None
    x_codes, edge_index, e_codes = out
    return Data(x=_one_hot(torch.from_numpy(x_codes), _X_SIZES),
                edge_index=torch.from_numpy(edge_index).long(),
                edge_attr=_one_hot(torch.from_numpy(e_codes).view(-1, 3), _E_SIZES),
                smiles=smiles)


def _worker_init() -> None:
    torch.set_num_threads(1)
    _silence_rdkit()


def _featurize_codes(smiles: Sequence[str], num_workers: int) -> list[Any]:
    """``_mol_codes`` for every SMILES, on a process pool when there are many of them."""
    _silence_rdkit()
    if num_workers > 1 and len(smiles) > _POOL_MIN_MOLECULES:
        chunk = max(16, math.ceil(len(smiles) / (num_workers * 8)))
        return list(_pool_map(_mol_codes, smiles, num_workers, _worker_init,
                              "featurizing SMILES", chunksize=chunk))
    return [_mol_codes(s) for s in smiles]


def _pack(results: Sequence[Any]) -> dict[str, Any]:
    """Concatenated code tensors + offsets: the on-disk cache format (loads in milliseconds)."""
    ok = [r for r in results if not isinstance(r[0], str)]
    nodes = [0 if isinstance(r[0], str) else r[0].shape[0] for r in results]
    edges = [0 if isinstance(r[0], str) else r[1].shape[1] for r in results]
    return {
        "version": FEATURIZER_VERSION,
        "x_codes": torch.from_numpy(np.concatenate([r[0] for r in ok]) if ok
                                    else np.zeros((0, len(_X_SIZES)), np.uint8)),
        "edge_index": torch.from_numpy(np.concatenate([r[1] for r in ok], axis=1) if ok
                                       else np.zeros((2, 0), np.int64)),
        "e_codes": torch.from_numpy(np.concatenate([r[2].reshape(-1, 3) for r in ok]) if ok
                                    else np.zeros((0, len(_E_SIZES)), np.uint8)),
        "num_nodes": torch.tensor(nodes, dtype=torch.long),
        "num_edges": torch.tensor(edges, dtype=torch.long),
        # failures only: a list of one string per molecule costs the weights_only unpickler
        # more than all the tensors together on a cached reload
        "errors": {i: (r[0], r[1]) for i, r in enumerate(results) if isinstance(r[0], str)},
    }


def _unpack(packed: dict[str, Any]) -> list[Any]:
    """Per molecule: ``(x, edge_index, edge_attr)`` tensors, or ``(code, message)``.

    The tensors are views into one big one-hot tensor per kind (cheap to build; a single graph
    saved on its own with ``torch.save`` would carry the whole storage, so clone it first).
    """
    n_nodes, n_edges = packed["num_nodes"].tolist(), packed["num_edges"].tolist()
    xs = torch.split(_one_hot(packed["x_codes"], _X_SIZES), n_nodes)
    eis = torch.split(packed["edge_index"], n_edges, dim=1)
    eas = torch.split(_one_hot(packed["e_codes"], _E_SIZES), n_edges)
    out: list[Any] = list(zip(xs, eis, eas, strict=True))
    for i, (code, msg) in packed["errors"].items():
        out[i] = (code, msg)
    return out


def default_cache_dir() -> Path:
    """``$GATRANK_CACHE_DIR`` if set, else ``~/.cache/gatrank``."""
    env = os.environ.get("GATRANK_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "gatrank"


def _cache_file(smiles: Sequence[str], cache_dir: str | Path | None) -> Path:
    from rdkit import __version__ as rdkit_version  # deferred (see the imports)

    h = hashlib.sha256()
    h.update(f"gatrank-featurizer {FEATURIZER_VERSION} rdkit {rdkit_version} "
             f"pyg {torch_geometric.__version__} {_X_SIZES} {_E_SIZES}\n".encode())
    h.update("\n".join(smiles).encode())
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / "smiles" / f"{h.hexdigest()[:32]}.pt"


def _read_cache(path: Path, n: int) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        packed = safe_torch_load(path)
        if packed.get("version") != FEATURIZER_VERSION or len(packed["num_nodes"]) != n:
            raise ValueError("cache entry does not match this SMILES list")
        return packed
    except Exception as exc:  # any damage to a cache file just means recomputing it
        logger.warning("ignoring unusable SMILES cache file %s (%s); recomputing", path, exc)
        return None


def _write_cache(path: Path, packed: dict[str, Any]) -> None:
    """Write via a temp file + ``os.replace`` so readers never see a half-written file."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            torch.save(packed, f)
        os.replace(tmp, path)
    except OSError as exc:
        logger.warning("could not write SMILES cache %s (%s); next load featurizes again",
                       path, exc)
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _featurize_all(smiles: Sequence[str], cache_dir: str | Path | None,
                   num_workers: int | None) -> list[Any]:
    """Featurize a SMILES list through the on-disk cache (keyed by the list + versions)."""
    if not smiles:
        return []
    path = _cache_file(smiles, cache_dir)
    packed = _read_cache(path, len(smiles))
    if packed is None:
        workers = _pool_workers(len(smiles), num_workers, _POOL_MIN_MOLECULES + 1)
        logger.info("featurizing %d SMILES with %d worker(s)", len(smiles), workers)
        packed = _pack(_featurize_codes(smiles, workers))
        _write_cache(path, packed)
    else:
        logger.debug("SMILES features from cache %s", path)
    return _unpack(packed)
