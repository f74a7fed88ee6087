"""Manifest reading, graph loading, validation, splits and the SMILES feature cache.

A manifest is a CSV file with one row per graph: ``y`` (float target, larger should rank
higher), exactly one graph source per row (``path`` to a graph file relative to the manifest's
folder, or ``smiles``), and optional ``id``, ``split`` (train/val/test) and ``group`` (query id:
pairs form only within a group). Validation collects every problem of a manifest before it
reports, so a user fixes their data in one pass instead of one error at a time.

Every graph in a :class:`GraphSet` satisfies: ``x`` float32 ``[num_nodes, F]`` (F shared by all
graphs), ``edge_index`` int64 ``[2, E]`` with ``E > 0`` and indices in range, optional
``edge_attr`` float32 ``[E, D]``, ``y`` float32 ``[1]``, ``group`` int64 ``[1]`` (group code, -1
without groups), ``idx`` int64 ``[1]`` (position in the GraphSet), string attributes ``gid``
and ``smiles``; nothing is NaN or Inf.
"""

from __future__ import annotations

import copy
import csv
import gc
import hashlib
import io
import json
import logging
import math
import multiprocessing
import os
import pickle
import tempfile
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import networkx as nx
import numpy as np
import pandas as pd
import torch
import torch_geometric
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.data.data import DataEdgeAttr, DataTensorAttr
from torch_geometric.data.storage import EdgeStorage, GlobalStorage, NodeStorage
from torch_geometric.utils.smiles import e_map, from_rdmol, x_map

logger = logging.getLogger(__name__)

__all__ = [
    "DataProblem",
    "DataError",
    "UnsafeFileError",
    "GraphSet",
    "CheckReport",
    "read_manifest",
    "load_graphs",
    "check_manifest",
    "split_indices",
    "safe_torch_load",
    "featurize_smiles",
    "default_cache_dir",
    "SPLITS",
    "WARNING_CODES",
    "TIE_EPS",
    "FEATURIZER_VERSION",
]

SPLITS = ("train", "val", "test")
WARNING_CODES = frozenset({"singleton_group"})
"""Problem codes that are reported but never stop loading: the rows are harmless."""
TIE_EPS = 1e-6
FEATURIZER_VERSION = "1"
"""Bump when SMILES featurization changes, so old cache files are not reused."""

_GRAPH_SUFFIXES = (".pt", ".json", ".graphml", ".gml", ".npz")
_POOL_MIN_MOLECULES = 500
_X_SIZES = [len(v) for v in x_map.values()]  # one-hot width of each PyG atom category
_E_SIZES = [len(v) for v in e_map.values()]
_SAFE_GLOBALS = [Data, DataEdgeAttr, DataTensorAttr, GlobalStorage, NodeStorage, EdgeStorage]
_SPLIT_SYNONYMS = {"training": "train", "valid": "val", "validation": "val", "dev": "val",
                   "testing": "test", "holdout": "test"}
_NAN_WORDS = {"nan", "na", "n/a", "null", "none"}


# --------------------------------------------------------------------------- problems


@dataclass(frozen=True)
class DataProblem:
    """One thing wrong with a manifest, a row or a graph file.

    ``line`` is the manifest line (header = 1, first data row = 2; None for manifest-level
    problems). ``file`` is the graph file as written in the manifest for problems inside it,
    else the manifest path. ``code`` is a short machine id (see docs/failure_modes_data.md).
    """

    line: int | None
    id: str | None
    file: str | None
    problem: str
    fix: str
    code: str

    @property
    def is_warning(self) -> bool:
        """True for problems that are reported but do not stop loading (``WARNING_CODES``)."""
        return self.code in WARNING_CODES


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1):]


def _format_problems(problems: Sequence[DataProblem]) -> str:
    """A fixed-width table: line, id, file, code, problem; the fix on the line below."""
    head = ("line", "id", "file", "code")
    rows = [
        ("-" if p.line is None else str(p.line), _clip(p.id or "-", 24),
         _clip(p.file or "-", 40), p.code)
        for p in problems
    ]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(head)]
    indent = " " * (sum(widths) + 2 * len(widths))

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if i == 0 else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    out = [fmt(head) + "  problem"]
    for p, r in zip(problems, rows, strict=True):
        out.append(f"{fmt(r)}  {p.problem}")
        out.append(f"{indent}fix: {p.fix}")
    return "\n".join(out)


class DataError(ValueError):
    """Raised with ALL problems of a manifest; ``.problems`` lists them, ``str()`` is a table."""

    def __init__(self, problems: Sequence[DataProblem], manifest: str | Path | None = None):
        self.problems = list(problems)
        self.manifest = None if manifest is None else str(manifest)
        where = f" in manifest {self.manifest}" if self.manifest else ""
        n = len(self.problems)
        hint = ""
        if self.problems and all(p.line is not None for p in self.problems):
            hint = ' (fix them, or load with on_error="skip" to drop the bad rows)'
        header = f"{n} problem{'s' if n != 1 else ''}{where}{hint}:"
        super().__init__(header + "\n" + _format_problems(self.problems))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.problems, self.manifest))


class UnsafeFileError(ValueError):
    """A torch file holds pickled objects outside the allowlist; it was not loaded."""


class _FileProblem(Exception):
    """Internal: a loader found something wrong inside one graph file."""

    def __init__(self, code: str, problem: str, fix: str):
        super().__init__(problem)
        self.code, self.problem, self.fix = code, problem, fix


# --------------------------------------------------------------------------- safe loading


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


# --------------------------------------------------------------------------- SMILES


def _silence_rdkit() -> None:
    from rdkit import RDLogger

    RDLogger.DisableLog("rdApp.*")  # parse errors become DataProblems instead of stderr noise


def _mol_codes(smiles: str) -> tuple[str, str] | tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Category codes of one molecule, or ``(code, message)`` when it cannot be featurized.

    Returns ``x_codes`` uint8 ``[N, 9]``, ``edge_index`` int64 ``[2, E]``, ``e_codes`` uint8
    ``[E, 3]``, the integer columns of PyG's ``from_smiles`` (which is ``MolFromSmiles`` +
    ``from_rdmol``; we parse ourselves because ``from_smiles`` turns bad SMILES into an empty
    molecule instead of failing).
    """
    from rdkit import Chem as chem  # noqa: N813  (callers silence RDKit's logger)

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
        with multiprocessing.get_context().Pool(num_workers, initializer=_worker_init) as pool:
            return pool.map(_mol_codes, smiles, chunksize=chunk)
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
        "error_code": ["" if not isinstance(r[0], str) else r[0] for r in results],
        "error_message": ["" if not isinstance(r[0], str) else r[1] for r in results],
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
    return [(code, msg) if code else (x, ei, ea)
            for code, msg, x, ei, ea in zip(packed["error_code"], packed["error_message"],
                                            xs, eis, eas, strict=True)]


def default_cache_dir() -> Path:
    """``$GATRANK_CACHE_DIR`` if set, else ``~/.cache/gatrank``."""
    env = os.environ.get("GATRANK_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "gatrank"


def _cache_file(smiles: Sequence[str], cache_dir: str | Path | None) -> Path:
    from rdkit import __version__ as rdkit_version

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
        if packed.get("version") != FEATURIZER_VERSION or len(packed["error_code"]) != n:
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
        workers = num_workers if num_workers is not None else (
            len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        ) or 1
        logger.info("featurizing %d SMILES with %d worker(s)", len(smiles), workers)
        packed = _pack(_featurize_codes(smiles, workers))
        _write_cache(path, packed)
    else:
        logger.debug("SMILES features from cache %s", path)
    return _unpack(packed)


# --------------------------------------------------------------------------- graph files


def _as_tensor(value: Any, name: str) -> Tensor:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, np.ndarray) and value.dtype != object:
        return torch.from_numpy(value)
    try:
        return torch.tensor(value)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise _FileProblem("bad_graph_content", f"'{name}' is not a numeric array ({exc})",
                           f"store '{name}' as a rectangular array of numbers") from None


def _is_number(v: Any) -> bool:
    return isinstance(v, (bool, int, float, np.number))


def _attr_matrix(items: Sequence[tuple[Any, dict]], kind: str, skip: set[str]) -> Tensor | None:
    """Features from per-node/per-edge attribute dicts: an ``x`` list, else numeric attributes
    sorted by name. ``[len(items), F]`` float32, or None when there are none."""
    if not items:
        return None
    has_x = [("x" in d) for _, d in items]
    if any(has_x):
        if not all(has_x):
            key = items[has_x.index(False)][0]
            raise _FileProblem("bad_graph_content", f"{kind} {key!r} has no 'x' but others do",
                               f"give every {kind} an 'x' feature list of the same length")
        rows = [np.atleast_1d(np.asarray(d["x"], dtype=np.float64)) for _, d in items]
        widths = {r.shape for r in rows}
        if len(widths) > 1 or rows[0].ndim != 1:
            raise _FileProblem("bad_graph_content", f"{kind} 'x' lists have different lengths "
                               f"{sorted(s[0] for s in widths if s)}",
                               f"give every {kind} an 'x' list of the same length")
        return torch.from_numpy(np.stack(rows)).float()
    names = sorted({k for _, d in items for k, v in d.items() if k not in skip and _is_number(v)})
    if not names:
        return None
    for key, d in items:
        missing = [n for n in names if not _is_number(d.get(n))]
        if missing:
            raise _FileProblem("bad_graph_content",
                               f"{kind} {key!r} lacks numeric attribute(s) {missing} that "
                               f"other {kind}s have",
                               f"give every {kind} the same numeric attributes {names}")
    return torch.tensor([[float(d[n]) for n in names] for _, d in items], dtype=torch.float32)


def _both_directions(edge_index: Tensor, edge_attr: Tensor | None) -> tuple[Tensor, Any]:
    """Add the reverse of every non-self-loop edge (undirected graph -> PyG convention)."""
    keep = edge_index[0] != edge_index[1]
    ei = torch.cat([edge_index, edge_index[:, keep].flip(0)], dim=1)
    ea = None if edge_attr is None else torch.cat([edge_attr, edge_attr[keep]])
    return ei, ea


def _from_networkx(g: Any) -> dict[str, Any]:
    nodes = list(g.nodes)
    pos = {n: i for i, n in enumerate(nodes)}
    x = _attr_matrix([(n, g.nodes[n]) for n in nodes], "node", skip={"id"})
    edges = list(g.edges(data=True))
    edge_index = torch.tensor([[pos[u] for u, _, _ in edges], [pos[v] for _, v, _ in edges]],
                              dtype=torch.long).view(2, -1)
    edge_attr = _attr_matrix([(f"{u}->{v}", d) for u, v, d in edges], "edge",
                             skip={"id", "key", "source", "target"})
    if not g.is_directed():
        edge_index, edge_attr = _both_directions(edge_index, edge_attr)
    return {"x": x, "edge_index": edge_index, "edge_attr": edge_attr, "num_nodes": len(nodes)}


def _load_json(path: Path) -> dict[str, Any]:
    obj = json.loads(path.read_text(encoding="utf-8-sig"))
    if isinstance(obj, dict) and "nodes" in obj:
        edges = obj.get("links", obj.get("edges"))
        if edges is None:
            edges = []
        directed, multi = bool(obj.get("directed", False)), bool(obj.get("multigraph", False))
        g = {(False, False): nx.Graph, (True, False): nx.DiGraph,
             (False, True): nx.MultiGraph, (True, True): nx.MultiDiGraph}[(directed, multi)]()
        for i, node in enumerate(obj["nodes"]):
            node = node if isinstance(node, dict) else {"id": node}
            if node.get("id", i) in g:
                raise _FileProblem("bad_graph_content",
                                   f"node id {node.get('id', i)!r} appears more than once",
                                   "give every node a unique 'id'")
            g.add_node(node.get("id", i), **node)
        for k, e in enumerate(edges):
            for end in ("source", "target"):
                if e.get(end) not in g:
                    raise _FileProblem(
                        "edge_index_out_of_range",
                        f"edge {k} has {end} {e.get(end)!r}, which is not one of the "
                        f"{g.number_of_nodes()} node ids",
                        "make every edge's source/target the 'id' of a node in 'nodes'")
            g.add_edge(e["source"], e["target"], **e)
        return _from_networkx(g)
    if isinstance(obj, dict) and ("x" in obj or "edge_index" in obj):
        return {k: (None if obj.get(k) is None else _as_tensor(obj[k], k))
                for k in ("x", "edge_index", "edge_attr")}
    raise _FileProblem("bad_graph_content",
                       "JSON holds neither 'nodes' + 'links'/'edges' nor 'x' + 'edge_index'",
                       'write {"nodes": [...], "links": [{"source": .., "target": ..}]} or '
                       '{"x": [[...]], "edge_index": [[...], [...]]}')


def _load_pt(path: Path) -> dict[str, Any]:
    obj = safe_torch_load(path)
    if isinstance(obj, Data):
        return {"x": obj.x, "edge_index": obj.edge_index,
                "edge_attr": obj.edge_attr if "edge_attr" in obj else None,
                "num_nodes": obj.num_nodes}
    if isinstance(obj, dict):
        return {k: (None if obj.get(k) is None else _as_tensor(obj[k], k))
                for k in ("x", "edge_index", "edge_attr")}
    raise _FileProblem("bad_graph_content",
                       f"holds a {type(obj).__name__}, not a PyG Data or a dict of tensors",
                       "torch.save(Data(x=..., edge_index=...), path) or "
                       "torch.save({'x': x, 'edge_index': edge_index}, path)")


def _load_npz(path: Path) -> dict[str, Any]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: (torch.from_numpy(z[k]) if k in z.files else None)
                    for k in ("x", "edge_index", "edge_attr")}
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise _FileProblem("unsafe_file", "holds pickled object arrays, so it was NOT loaded",
                               "save plain numeric arrays: np.savez(path, x=x, edge_index=ei)"
                               ) from None
        raise


_LOADERS = {
    ".pt": _load_pt,
    ".json": _load_json,
    ".graphml": lambda p: _from_networkx(nx.read_graphml(p)),
    ".gml": lambda p: _from_networkx(nx.read_gml(p, label=None)),
    ".npz": _load_npz,
}


def _check_graph(raw: dict[str, Any]) -> tuple[tuple[Tensor, Tensor, Tensor | None] | None,
                                               list[tuple[str, str, str]]]:
    """Validate loaded tensors; returns ``(x, edge_index, edge_attr)`` or the problems found."""
    found: list[tuple[str, str, str]] = []
    x, ei, ea = raw.get("x"), raw.get("edge_index"), raw.get("edge_attr")
    if x is None:
        return None, [("missing_features", "has no node features (x)",
                       "store x as a [num_nodes, num_features] array (numeric node attributes "
                       "for graphml/gml/json)")]
    if x.dtype.is_complex or not (x.dtype.is_floating_point or x.dtype in
                                  (torch.bool, torch.uint8, torch.int8, torch.int16,
                                   torch.int32, torch.int64)):
        return None, [("bad_graph_content", f"x has dtype {x.dtype}", "store x as numbers")]
    if x.dim() == 1:
        x = x.view(-1, 1)
    if x.dim() != 2:
        return None, [("bad_graph_content", f"x has shape {list(x.shape)}",
                       "store x as a 2-D [num_nodes, num_features] array")]
    x = x.float()  # float64/int/bool -> float32; overflow becomes Inf and is caught below
    n = x.shape[0]
    if n == 0:
        return None, [("empty_graph", "has no nodes", "remove this row or fix the graph file")]
    bad = ~torch.isfinite(x)
    if bad.any():
        r, c = bad.nonzero()[0].tolist()
        found.append(("nonfinite_features",
                      f"node features contain {int(torch.isnan(x).sum())} NaN and "
                      f"{int(torch.isinf(x).sum())} Inf values (first at node {r}, column {c})",
                      "impute or drop the missing values before saving the graph"))
    if ei is None or ei.numel() == 0:
        found.append(("no_edges", f"has no edges ({n} node{'s' if n != 1 else ''}, "
                      "edge_index is empty)",
                      "message passing needs edges: drop this row, or add edges (e.g. "
                      "self-loops) deliberately before loading"))
        return None, found
    if ei.dim() != 2 or ei.shape[0] != 2:
        hint = " (it looks transposed: use edge_index.t())" if ei.dim() == 2 and \
            ei.shape[1] == 2 else ""
        found.append(("bad_edge_index_shape", f"edge_index has shape {list(ei.shape)}, "
                      f"expected [2, num_edges]{hint}", "store edge_index as a [2, E] array"))
        return None, found
    # float indices holding whole numbers (e.g. from JSON or numpy) convert losslessly
    if ei.dtype == torch.bool or ei.dtype.is_complex or (
        ei.dtype.is_floating_point and (~torch.isfinite(ei) | (ei != ei.round())).any()
    ):
        found.append(("non_integer_edge_index",
                      f"edge_index has dtype {ei.dtype} with non-integer values",
                      "store edge_index as integers (node positions 0..num_nodes-1)"))
        return None, found
    ei = ei.long()
    lo, hi = int(ei.min()), int(ei.max())
    if lo < 0 or hi >= n:
        worst = hi if hi >= n else lo
        found.append(("edge_index_out_of_range",
                      f"edge_index refers to node {worst} but the graph has {n} nodes "
                      f"(valid: 0..{n - 1})",
                      "renumber the edges to node positions 0..num_nodes-1, or add the "
                      "missing nodes to x"))
    if ea is not None:
        ea = ea.view(-1, 1) if ea.dim() == 1 else ea
        if ea.dim() != 2 or ea.shape[0] != ei.shape[1] or not (
            ea.dtype.is_floating_point or ea.dtype in (torch.bool, torch.long, torch.int32)
        ):
            found.append(("edge_attr_mismatch",
                          f"edge_attr has shape {list(ea.shape)} and dtype {ea.dtype} but "
                          f"edge_index has {ei.shape[1]} edges",
                          "store edge_attr as a numeric [num_edges, D] array, one row per "
                          "edge_index column"))
        else:
            ea = ea.float()
            if not torch.isfinite(ea).all():
                found.append(("nonfinite_edge_features",
                              f"edge features contain {int(torch.isnan(ea).sum())} NaN and "
                              f"{int(torch.isinf(ea).sum())} Inf values",
                              "impute or drop the missing edge values before saving the graph"))
    if found:
        return None, found
    return (x, ei.contiguous(), ea), []


# --------------------------------------------------------------------------- manifest


def _sniff_delimiter(first_line: str) -> str:
    counts = {d: first_line.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] > 0 else ","


def _outside_root(raw: str) -> bool:
    if PurePosixPath(raw).is_absolute() or PureWindowsPath(raw).drive or raw.startswith("\\"):
        return True
    parts = PurePosixPath(os.path.normpath(raw.replace("\\", "/"))).parts
    return bool(parts) and parts[0] == ".."


@dataclass
class _Parsed:
    """Internal result of reading a manifest: the table plus every table-level problem."""

    manifest: Path
    table: pd.DataFrame | None
    problems: list[DataProblem]
    fatal: bool  # a manifest-level problem: no rows can be used


def _parse_manifest(path: str | Path, allow_outside_root: bool) -> _Parsed:
    manifest = Path(path)
    mfile = str(manifest)

    def fatal(problem: str, fix: str, code: str) -> _Parsed:
        return _Parsed(manifest, None, [DataProblem(None, None, mfile, problem, fix, code)], True)

    if not manifest.is_file():
        return fatal(f"manifest {mfile} does not exist or is not a file",
                     "pass the path of your manifest.csv", "manifest_not_found")
    try:
        text = manifest.read_bytes().decode("utf-8-sig")  # -sig strips a UTF-8 BOM
    except UnicodeDecodeError as exc:
        return fatal(f"manifest is not UTF-8 text ({exc.reason} at byte {exc.start})",
                     "save it as UTF-8 (in Excel: 'CSV UTF-8')", "unreadable_manifest")
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    if not first:
        return fatal("manifest is empty", "write a header (y, and path or smiles) and one row "
                     "per graph", "empty_manifest")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_sniff_delimiter(first))
    header: list[str] | None = None
    records: list[tuple[int, list[str]]] = []
    prev_end = 0
    for rec in reader:
        start, prev_end = prev_end + 1, reader.line_num
        if not any(c.strip() for c in rec):
            continue
        if header is None:
            header = [c.strip().lower() for c in rec]
        else:
            records.append((start, rec))
    assert header is not None
    problems: list[DataProblem] = []
    dup = sorted(c for c, k in Counter(header).items() if k > 1 and c)
    if dup:
        problems.append(DataProblem(None, None, mfile, f"duplicate column(s) {dup} in the header",
                                    "keep one column of each name", "duplicate_column"))
    if "y" not in header:
        problems.append(DataProblem(
            None, None, mfile, f"no 'y' column (columns found: {', '.join(header)})",
            "add a 'y' column with the numeric target (larger = should rank higher), or rename "
            "your target column to 'y'", "missing_y_column"))
    if "path" not in header and "smiles" not in header:
        problems.append(DataProblem(
            None, None, mfile, f"no graph source column (columns found: {', '.join(header)})",
            "add a 'path' column (graph files relative to the manifest) or a 'smiles' column",
            "missing_source_column"))
    if not records:
        problems.append(DataProblem(None, None, mfile, "manifest has a header but no data rows",
                                    "add one row per graph", "empty_manifest"))
    if problems:
        return _Parsed(manifest, None, problems, True)

    col = {c: header.index(c) for c in ("id", "y", "path", "smiles", "split", "group")
           if c in header}
    rows: list[dict[str, Any]] = []
    for pos, (line, rec) in enumerate(records):
        def get(name: str, rec: list[str] = rec) -> str | None:
            v = rec[col[name]].strip() if name in col and col[name] < len(rec) else ""
            return v or None

        rid = get("id") or str(pos)
        row = {"id": rid, "y": math.nan, "split": get("split"), "group": get("group"),
               "smiles": get("smiles"), "path": get("path"), "line": line}
        rows.append(row)

        def report(problem: str, fix: str, code: str, line: int = line, rid: str = rid) -> None:
            problems.append(DataProblem(line, rid, mfile, problem, fix, code))

        if len(rec) != len(header):
            report(f"row has {len(rec)} fields but the header has {len(header)}",
                   "quote fields that contain the delimiter, and give every row one field per "
                   "column", "wrong_field_count")
            continue
        y = get("y")
        if y is None:
            report("target y is empty", "fill in y, or remove the row", "missing_target")
        elif y.lower() in _NAN_WORDS:
            report(f"target y is NaN ({y!r})", "fill in a measured value, or remove the row",
                   "nan_target")
        else:
            try:
                row["y"] = float(y)
            except ValueError:
                report(f"target y {y!r} is not a number", "write y as a plain number such as "
                       "5.48 (no units, '.' as the decimal point)", "non_numeric_target")
            else:
                if math.isnan(row["y"]):
                    report("target y is NaN", "fill in a measured value, or remove the row",
                           "nan_target")
                elif math.isinf(row["y"]):
                    report(f"target y is infinite ({y})", "replace it with a finite value, or "
                           "remove the row", "inf_target")
        if row["smiles"] and row["path"]:
            report("row has both a path and a smiles", "fill exactly one of path / smiles",
                   "both_sources")
        elif not row["smiles"] and not row["path"]:
            report("row has neither a path nor a smiles", "fill exactly one of path / smiles",
                   "no_source")
        elif row["path"]:
            if _outside_root(row["path"]) and not allow_outside_root:
                report(f"path {row['path']!r} leaves the manifest's folder",
                       "move the file under the manifest's folder and use a relative path, or "
                       "pass allow_outside_root=True if you trust this manifest",
                       "path_outside_root")
            suffix = PurePosixPath(row["path"].replace("\\", "/")).suffix.lower()
            if suffix not in _GRAPH_SUFFIXES:
                report(f"unknown graph file extension {suffix or '(none)'!r} in "
                       f"{row['path']!r}", f"use one of {', '.join(_GRAPH_SUFFIXES)}",
                       "unknown_extension")
        if "split" in col:
            split = (row["split"] or "").lower()
            if not split:
                report("split is empty", "fill in train, val or test, or drop the split column "
                       "to get a seeded random split", "missing_split")
            elif split not in SPLITS:
                suggestion = _SPLIT_SYNONYMS.get(split)
                report(f"unknown split {row['split']!r}",
                       f"rename it to {suggestion!r}" if suggestion else
                       f"use one of {', '.join(SPLITS)}", "unknown_split")
            else:
                row["split"] = split
        if "group" in col and row["group"] is None:
            report("group is empty", "fill in the query id this graph belongs to",
                   "missing_group")

    first_line: dict[str, int] = {}
    for row in rows:
        if row["id"] in first_line:
            problems.append(DataProblem(
                row["line"], row["id"], mfile,
                f"id {row['id']!r} is already used on line {first_line[row['id']]}",
                "give every row a unique id (the first row with this id is kept)",
                "duplicate_id"))
        else:
            first_line[row["id"]] = row["line"]
    members = Counter(r["group"] for r in rows if r["group"] is not None)
    for row in rows:
        if row["group"] is not None and members[row["group"]] == 1:
            problems.append(DataProblem(
                row["line"], row["id"], mfile,
                f"group {row['group']!r} has only this row, so it forms no ranking pairs",
                "add more graphs to the group, or merge it into another group",
                "singleton_group"))
    # object dtype keeps None for empty cells (pandas' string dtype would turn them into NaN)
    table = pd.DataFrame(rows, columns=["id", "y", "split", "group", "smiles", "path", "line"],
                         dtype=object)
    problems.sort(key=lambda p: (p.line or 0))
    return _Parsed(manifest, table.astype({"y": "float64", "line": "int64"}), problems, False)


def read_manifest(path: str | Path, *, allow_outside_root: bool = False) -> pd.DataFrame:
    """Parse and validate a manifest table (not the graph files).

    Accepts a UTF-8 BOM, CRLF line endings and ``,`` / ``;`` / tab delimiters (sniffed from the
    header). Returns one row per data row: id, y, split, group, smiles, path (None when empty),
    line. Raises :class:`DataError` with every table problem; ``singleton_group`` warnings are
    only logged.
    """
    parsed = _parse_manifest(path, allow_outside_root)
    errors = [p for p in parsed.problems if not p.is_warning]
    if errors:
        raise DataError(errors, parsed.manifest)
    if parsed.problems:
        logger.warning("%s: %d group(s) have a single row and form no ranking pairs (lines %s)",
                       parsed.manifest, len(parsed.problems),
                       ", ".join(str(p.line) for p in parsed.problems[:10]))
    assert parsed.table is not None
    return parsed.table


# --------------------------------------------------------------------------- loading


@dataclass
class GraphSet:
    """Validated graphs of a manifest, in manifest order, with their table rows.

    ``table`` columns: id, y, split, group, smiles, path, line, num_nodes, num_edges (one row per
    graph, aligned with ``graphs``). ``dropped`` holds the problems of rows dropped under
    ``on_error="skip"``.
    """

    graphs: list[Data]
    table: pd.DataFrame
    num_features: int
    manifest: Path
    dropped: list[DataProblem] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.graphs)

    def __getitem__(self, i: int) -> Data:
        return self.graphs[i]

    def subset(self, indices: Sequence[int] | Tensor | np.ndarray) -> GraphSet:
        """A GraphSet of the given positions; ``idx`` is renumbered to positions in the subset."""
        idx = [int(i) for i in (indices.tolist() if hasattr(indices, "tolist") else indices)]
        bad = [i for i in idx if not -len(self) <= i < len(self)]
        if bad:
            raise IndexError(f"subset indices {bad[:5]} out of range for {len(self)} graphs")
        graphs = []
        for new, i in enumerate(idx):
            g = copy.copy(self.graphs[i])  # shallow: tensors are shared, only idx changes
            g.idx = torch.tensor([new], dtype=torch.long)
            graphs.append(g)
        return GraphSet(graphs, self.table.iloc[idx].reset_index(drop=True), self.num_features,
                        self.manifest, list(self.dropped))


@dataclass
class _Collected:
    parsed: _Parsed
    problems: list[DataProblem]
    keep: list[int]  # table positions of valid rows
    tensors: dict[int, tuple[Tensor, Tensor, Tensor | None]]


def _collect(path: str | Path, allow_outside_root: bool, cache_dir: str | Path | None,
             num_workers: int | None) -> _Collected:
    """Parse, load and validate everything, collecting every problem instead of stopping."""
    with _gc_paused():
        parsed = _parse_manifest(path, allow_outside_root)
    problems = list(parsed.problems)
    if parsed.fatal:
        return _Collected(parsed, problems, [], {})
    table = parsed.table
    assert table is not None
    root = parsed.manifest.parent
    # plain lists: pandas scalar access costs ~25 us, too slow per row for a cached reload
    lines, ids = table["line"].tolist(), table["id"].tolist()
    smiles, paths = table["smiles"].tolist(), table["path"].tolist()
    bad_lines = {p.line for p in problems if not p.is_warning}
    ok_rows = [i for i, line in enumerate(lines) if line not in bad_lines]
    tensors: dict[int, tuple[Tensor, Tensor, Tensor | None]] = {}

    def report(i: int, file: str, code: str, problem: str, fix: str) -> None:
        problems.append(DataProblem(lines[i], ids[i], file, problem, fix, code))

    smiles_rows = [i for i in ok_rows if smiles[i] is not None]
    featurized = _featurize_all([smiles[i] for i in smiles_rows], cache_dir, num_workers)
    for i, out in zip(smiles_rows, featurized, strict=True):
        smi = smiles[i]
        if isinstance(out[0], str) and out[0] == "invalid_smiles":
            report(i, str(parsed.manifest), out[0], f"SMILES {smi!r} is invalid: {out[1]}",
                   "correct the SMILES (check it in RDKit: Chem.MolFromSmiles), or remove the row")
        elif isinstance(out[0], str):
            report(i, str(parsed.manifest), out[0], f"cannot featurize SMILES {smi!r}: {out[1]}",
                   "remove the row, or featurize it yourself and give it as a graph file")
        elif out[0].shape[0] == 0:
            report(i, str(parsed.manifest), "empty_graph", f"SMILES {smi!r} has no atoms",
                   "correct the SMILES, or remove the row")
        elif out[1].shape[1] == 0:
            report(i, str(parsed.manifest), "no_edges",
                   f"molecule {smi!r} has {out[0].shape[0]} atom(s) and no bonds",
                   "message passing needs edges: remove single-atom molecules and salts-only "
                   "rows, or keep the largest fragment")
        else:
            tensors[i] = out

    for i in ok_rows:
        rel = paths[i]
        if rel is None:
            continue
        full = Path(rel) if Path(rel).is_absolute() else root / rel
        try:
            if not full.is_file():
                raise _FileProblem("missing_file", f"graph file {rel!r} does not exist "
                                   f"(looked for {full.absolute()})", "check the path: it is "
                                   "relative to the manifest's folder")
            raw = _LOADERS[full.suffix.lower()](full)
        except _FileProblem as fp:
            report(i, rel, fp.code, fp.problem, fp.fix)
            continue
        except UnsafeFileError as exc:
            report(i, rel, "unsafe_file", str(exc), "re-save it with plain tensors: "
                   "torch.save({'x': x, 'edge_index': edge_index}, path), or torch.save(Data)")
            continue
        except Exception as exc:  # parsers raise many exception types on corrupt input
            msg = str(exc).split(". ")[0].splitlines()[0][:200] if str(exc) else ""
            report(i, rel, "unreadable_file",
                   f"cannot read {rel!r}: {type(exc).__name__}: {msg}",
                   "the file is corrupt or truncated, or not in the format its extension says; "
                   "re-export it")
            continue
        graph, found = _check_graph(raw)
        for code, problem, fix in found:
            report(i, rel, code, problem, fix)
        if graph is not None:
            tensors[i] = graph

    _check_widths(table, tensors, parsed.manifest, problems)
    bad_lines = {p.line for p in problems if not p.is_warning}
    keep = [i for i in sorted(tensors) if lines[i] not in bad_lines]
    problems.sort(key=lambda p: (p.line or 0))
    return _Collected(parsed, problems, keep, tensors)


def _check_widths(table: pd.DataFrame, tensors: dict[int, tuple[Tensor, Tensor, Tensor | None]],
                  manifest: Path, problems: list[DataProblem]) -> None:
    """Every graph must share the majority node (and edge) feature width; report the others."""
    for kind, width_of in (("node", lambda t: t[0].shape[1]),
                           ("edge", lambda t: None if t[2] is None else t[2].shape[1])):
        widths = {i: width_of(t) for i, t in tensors.items()}
        counts = Counter(widths.values())
        if len(counts) < 2:
            continue
        major, n_major = counts.most_common(1)[0]
        major_txt = "none" if major is None else str(major)
        for i, w in widths.items():
            if w == major:
                continue
            src = table.at[i, "path"] or str(manifest)
            code = "feature_width_mismatch" if kind == "node" else "edge_feature_width_mismatch"
            problems.append(DataProblem(
                int(table.at[i, "line"]), table.at[i, "id"], src,
                f"{kind} features have {'no' if w is None else w} columns but {n_major} of "
                f"{len(widths)} graphs have {major_txt} (the majority width)",
                f"give every graph the same {kind} feature columns ({major_txt} here), or "
                "remove this row", code))


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cycle collector while building many small objects.

    Creating thousands of rows / Data objects (each Data holds a weakref cycle) otherwise
    triggers repeated full-heap scans, which can double a cached reload of 5,000 molecules.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _make_data(attrs: dict[str, Any]) -> Data:
    """``Data(**attrs)`` for plain tensors and strings, without the per-attribute hooks.

    On a fresh Data those hooks only end in ``_store._mapping[key] = value``; skipping them
    makes building 5,000 graphs ~10x faster (this dominates a cached reload).
    """
    data = Data()
    data._store._mapping.update(attrs)
    return data


def _assemble(col: _Collected, dropped: list[DataProblem]) -> GraphSet:
    parsed = col.parsed
    assert parsed.table is not None
    table = parsed.table.iloc[col.keep].reset_index(drop=True)
    items = [col.tensors[i] for i in col.keep]
    table["num_nodes"] = [t[0].shape[0] for t in items]
    table["num_edges"] = [t[1].shape[1] for t in items]
    has_groups = table["group"].notna().any()
    codes = pd.factorize(table["group"])[0] if has_groups else np.full(len(table), -1)
    n = len(table)
    ys = torch.tensor(table["y"].to_numpy(), dtype=torch.float32).view(n, 1).unbind(0)
    groups = torch.as_tensor(codes, dtype=torch.long).view(n, 1).unbind(0)
    idxs = torch.arange(n).view(n, 1).unbind(0)
    graphs = []
    with _gc_paused():
        for k, ((x, ei, ea), gid, smi) in enumerate(zip(items, table["id"], table["smiles"],
                                                        strict=True)):
            attrs = {"x": x, "edge_index": ei, "y": ys[k], "group": groups[k], "idx": idxs[k],
                     "gid": gid, "smiles": smi or ""}
            if ea is not None:
                attrs["edge_attr"] = ea
            graphs.append(_make_data(attrs))
    return GraphSet(graphs, table, int(items[0][0].shape[1]), parsed.manifest, dropped)


def load_graphs(path: str | Path, *, on_error: str = "raise", allow_outside_root: bool = False,
                cache_dir: str | Path | None = None,
                num_workers: int | None = None) -> GraphSet:
    """Load and validate every graph of a manifest.

    Args:
        path: the manifest CSV; graph paths in it are relative to its folder.
        on_error: ``"raise"`` raises :class:`DataError` listing every problem; ``"skip"`` drops
            the bad rows, records their problems in ``GraphSet.dropped`` and logs a warning.
            Manifest-level problems (no ``y`` column, empty file, ...) always raise.
        allow_outside_root: accept absolute paths and ``..`` in ``path``.
        cache_dir: SMILES feature cache (default ``$GATRANK_CACHE_DIR`` or ``~/.cache/gatrank``).
        num_workers: processes for featurizing more than 500 SMILES (default: all cores).

    Singleton groups are only logged, never raised or dropped: they are harmless, they just form
    no pairs (``check_manifest`` reports them as ``singleton_group`` warnings).
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    col = _collect(path, allow_outside_root, cache_dir, num_workers)
    errors = [p for p in col.problems if not p.is_warning]
    if col.parsed.fatal or (errors and on_error == "raise"):
        raise DataError(errors, col.parsed.manifest)
    if not col.keep:
        raise DataError(errors + [DataProblem(
            None, None, str(col.parsed.manifest), "no valid graph is left after dropping bad rows",
            "fix the problems above", "no_valid_graphs")], col.parsed.manifest)
    if errors:
        assert col.parsed.table is not None
        logger.warning("dropped %d of %d manifest rows with problems (%d problems; see "
                       "GraphSet.dropped)", len(col.parsed.table) - len(col.keep),
                       len(col.parsed.table), len(errors))
    gs = _assemble(col, errors)
    singletons = int((gs.table["group"].value_counts() == 1).sum())
    if singletons:
        logger.warning("%d group(s) have a single graph and contribute no ranking pairs",
                       singletons)
    return gs


# --------------------------------------------------------------------------- check report


@dataclass
class CheckReport:
    """Every problem of a manifest plus a summary of the graphs that are valid.

    ``ok`` is True when there are no error-level problems; warnings (``singleton_group``) are
    listed but do not make a manifest fail, matching what ``load_graphs`` accepts.
    """

    problems: list[DataProblem]
    summary: dict[str, Any]

    @property
    def errors(self) -> list[DataProblem]:
        return [p for p in self.problems if not p.is_warning]

    @property
    def warnings(self) -> list[DataProblem]:
        return [p for p in self.problems if p.is_warning]

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ok, problems (each with ``severity``), summary."""
        return {"ok": self.ok,
                "problems": [{**asdict(p), "severity": "warning" if p.is_warning else "error"}
                             for p in self.problems],
                "summary": self.summary}

    def format_table(self) -> str:
        """The problems table and the summary, for the CLI."""
        s = self.summary
        head = (f"{len(self.errors)} error(s), {len(self.warnings)} warning(s) in "
                f"{s.get('manifest')}")
        out = [head, _format_problems(self.problems) if self.problems else "no problems found",
               "", "summary:"]
        for key, value in s.items():
            if isinstance(value, dict):
                value = ", ".join(f"{k}={_fmt_num(v)}" for k, v in value.items())
            out.append(f"  {key}: {_fmt_num(value)}")
        return "\n".join(out)


def _fmt_num(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _stats(values: np.ndarray, with_std: bool = False) -> dict[str, float] | None:
    if len(values) == 0:
        return None
    out = {"min": float(values.min()), "mean": float(values.mean())}
    if with_std:
        out["std"] = float(values.std())
    out["max"] = float(values.max())
    return out


def _tie_fraction(y: np.ndarray, groups: np.ndarray | None) -> float | None:
    """Fraction of rankable pairs (within groups when given) with ``|dy| <= TIE_EPS``."""
    units = [y] if groups is None else [y[groups == g] for g in np.unique(groups)]
    ties = pairs = 0
    for v in units:
        v = np.sort(v)
        n = len(v)
        pairs += n * (n - 1) // 2
        ties += int((np.searchsorted(v, v + TIE_EPS, side="right") - np.arange(1, n + 1)).sum())
    return None if pairs == 0 else ties / pairs


def check_manifest(path: str | Path, *, allow_outside_root: bool = False,
                   cache_dir: str | Path | None = None) -> CheckReport:
    """Validate a manifest and its graphs; never raises for data problems, collects them all.

    Summary: manifest, num_rows, num_graphs (valid), num_features, num_edge_features, nodes and
    edges {min, mean, max}, y {min, mean, std, max}, tie_fraction (pairs with ``|dy| <= 1e-6``,
    within groups when there are groups; None without pairs), num_groups (None without groups),
    splits (counts per split; None without a split column). Statistics cover valid graphs only.
    """
    col = _collect(path, allow_outside_root, cache_dir, None)
    table = col.parsed.table
    summary: dict[str, Any] = {"manifest": str(col.parsed.manifest),
                               "num_rows": 0 if table is None else len(table), "num_graphs": 0,
                               "num_features": None, "num_edge_features": None, "nodes": None,
                               "edges": None, "y": None, "tie_fraction": None,
                               "num_groups": None, "splits": None}
    if table is not None and col.keep:
        gs = _assemble(col, [])
        t = gs.table
        y = t["y"].to_numpy()
        has_groups = t["group"].notna().any()
        ea = gs.graphs[0].edge_attr if "edge_attr" in gs.graphs[0] else None
        summary.update(
            num_graphs=len(gs), num_features=gs.num_features,
            num_edge_features=None if ea is None else int(ea.shape[1]),
            nodes=_stats(t["num_nodes"].to_numpy()), edges=_stats(t["num_edges"].to_numpy()),
            y=_stats(y, with_std=True),
            tie_fraction=_tie_fraction(y, t["group"].to_numpy(dtype=str) if has_groups else None),
            num_groups=int(t["group"].nunique()) if has_groups else None,
            splits={s: int((t["split"] == s).sum()) for s in SPLITS}
            if t["split"].notna().any() else None,
        )
    return CheckReport(col.problems, summary)


# --------------------------------------------------------------------------- splits


def split_indices(gs: GraphSet, *, seed: int, val_fraction: float = 0.1,
                  test_fraction: float = 0.1) -> dict[str, list[int]]:
    """Positions in ``gs`` per split: ``{"train": [...], "val": [...], "test": [...]}`` (sorted).

    Uses the manifest's ``split`` column when it has one (every row must then have a split).
    Otherwise a seeded random split of about the given fractions; with groups, whole groups go
    to one split (so no query is spread over train and test) and at least one group stays in
    train.
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"val_fraction={val_fraction} and test_fraction={test_fraction} must be "
                         "in [0, 1) and sum to less than 1")
    t = gs.table
    n = len(t)
    if t["split"].notna().any():
        missing = t.loc[t["split"].isna(), "line"].tolist()
        if missing:
            raise ValueError(f"the manifest has a split column but lines {missing[:10]} have no "
                             "split: fill them in, or drop the column for a random split")
        return {s: t.index[t["split"] == s].tolist() for s in SPLITS}
    rng = np.random.default_rng(seed)
    n_test, n_val = round(test_fraction * n), round(val_fraction * n)
    out: dict[str, list[int]] = {s: [] for s in SPLITS}
    if t["group"].notna().any():
        # rows without a group each count as their own unit
        keys = [g if g is not None else f"\0row{i}" for i, g in enumerate(t["group"])]
        codes, uniq = pd.factorize(pd.Series(keys))
        members = [np.flatnonzero(codes == c).tolist() for c in range(len(uniq))]
        order = rng.permutation(len(uniq))
        for k, c in enumerate(order):
            last = k == len(order) - 1  # keep at least one group for training
            if not last and len(out["test"]) < n_test:
                out["test"] += members[c]
            elif not last and len(out["val"]) < n_val:
                out["val"] += members[c]
            else:
                out["train"] += members[c]
    else:
        n_test, n_val = min(n_test, max(n - 1, 0)), min(n_val, max(n - 1 - n_test, 0))
        perm = rng.permutation(n).tolist()
        out["test"], out["val"], out["train"] = (perm[:n_test], perm[n_test:n_test + n_val],
                                                 perm[n_test + n_val:])
    return {s: sorted(v) for s, v in out.items()}
