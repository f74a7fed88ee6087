"""Loading a manifest's graphs: collect every problem, then assemble a :class:`GraphSet`."""

from __future__ import annotations

import copy
import gc
import logging
import weakref
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.data.storage import GlobalStorage

from gatrank.data.featurize import _featurize_all
from gatrank.data.manifest import _parse_manifest, _Parsed
from gatrank.data.parallel import _load_files
from gatrank.data.problems import DataError, DataProblem

logger = logging.getLogger(__name__)

__all__ = ["GraphSet", "load_graphs"]


@dataclass
class GraphSet:
    """Validated graphs of a manifest (or a PyG dataset), in its order, with their table rows.

    ``table`` columns: id, y, split, group, smiles, path, line, num_nodes, num_edges (one row per
    graph, aligned with ``graphs``); a dataset's table has ``line`` and ``path`` None and an
    ``index`` column (the graph's position in the dataset). ``dropped`` holds the problems of
    rows dropped under ``on_error="skip"``. ``manifest`` is None and ``dataset`` the spec
    (``package.module:name`` or a ``.pt`` path) for graphs read from a dataset.
    """

    graphs: list[Data]
    table: pd.DataFrame
    num_features: int
    manifest: Path | None
    dropped: list[DataProblem] = field(default_factory=list)
    dataset: str = ""

    @property
    def source(self) -> str:
        """Where the graphs came from, for messages: ``dataset SPEC`` or the manifest path."""
        return f"dataset {self.dataset}" if self.dataset else str(self.manifest)

    def __len__(self) -> int:
        return len(self.graphs)

    def __getitem__(self, i: int) -> Data:
        return self.graphs[i]

    @property
    def edge_dim(self) -> int | None:
        """The edge-feature width ``D`` of ``edge_attr`` ``[E, D]`` (``1`` for a 1-D
        ``edge_attr``), ``None`` when the graphs have no edge features. Loading checks every
        graph has the same width, so the first graph's is everyone's."""
        ea = getattr(self.graphs[0], "edge_attr", None) if self.graphs else None
        if ea is None:
            return None
        return int(ea.shape[1]) if ea.dim() > 1 else 1

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
                        self.manifest, list(self.dropped), self.dataset)


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
    # plain lists: pandas scalar access costs ~25 us, too slow per row for a cached reload
    lines, ids = table["line"].tolist(), table["id"].tolist()
    bad_lines = {p.line for p in problems if not p.is_warning}
    ok_rows = [i for i, line in enumerate(lines) if line not in bad_lines]
    tensors: dict[int, tuple[Tensor, Tensor, Tensor | None]] = {}

    def report(i: int, file: str, code: str, problem: str, fix: str) -> None:
        problems.append(DataProblem(lines[i], ids[i], file, problem, fix, code))

    _load_smiles(table["smiles"].tolist(), ok_rows, str(parsed.manifest), cache_dir, num_workers,
                 tensors, report)
    _load_files(table["path"].tolist(), ok_rows, parsed.manifest.parent, num_workers, tensors,
                report)
    _check_widths(table, tensors, parsed.manifest, problems)
    bad_lines = {p.line for p in problems if not p.is_warning}
    keep = [i for i in sorted(tensors) if lines[i] not in bad_lines]
    problems.sort(key=lambda p: (p.line or 0))
    return _Collected(parsed, problems, keep, tensors)


_Report = Callable[[int, str, str, str, str], None]  # (row, file, code, problem, fix)


def _load_smiles(smiles: list[str | None], ok_rows: list[int], mfile: str,
                 cache_dir: str | Path | None, num_workers: int | None,
                 tensors: dict[int, tuple[Tensor, Tensor, Tensor | None]],
                 report: _Report) -> None:
    """Featurize the rows' SMILES into ``tensors``; report those that give no usable graph."""
    smiles_rows = [i for i in ok_rows if smiles[i] is not None]
    featurized = _featurize_all([smiles[i] for i in smiles_rows], cache_dir, num_workers)
    for i, out in zip(smiles_rows, featurized, strict=True):
        smi = smiles[i]
        if isinstance(out[0], str) and out[0] == "invalid_smiles":
            report(i, mfile, out[0], f"SMILES {smi!r} is invalid: {out[1]}",
                   "correct the SMILES (check it in RDKit: Chem.MolFromSmiles), or remove the row")
        elif isinstance(out[0], str):
            report(i, mfile, out[0], f"cannot featurize SMILES {smi!r}: {out[1]}",
                   "remove the row, or featurize it yourself and give it as a graph file")
        elif out[0].shape[0] == 0:
            report(i, mfile, "empty_graph", f"SMILES {smi!r} has no atoms",
                   "correct the SMILES, or remove the row")
        elif out[1].shape[1] == 0:
            report(i, mfile, "no_edges",
                   f"molecule {smi!r} has {out[0].shape[0]} atom(s) and no bonds",
                   "message passing needs edges: remove single-atom molecules and salts-only "
                   "rows, or keep the largest fragment")
        else:
            tensors[i] = out


def _check_widths(table: pd.DataFrame, tensors: dict[int, tuple[Tensor, Tensor, Tensor | None]],
                  manifest: Path, problems: list[DataProblem]) -> None:
    """Every graph must share the majority node (and edge) feature width; report the others."""
    for i, code, problem, fix in _width_problems(tensors):
        problems.append(DataProblem(int(table.at[i, "line"]), table.at[i, "id"],
                                    table.at[i, "path"] or str(manifest), problem, fix, code))


def _width_problems(tensors: dict[int, tuple[Tensor, Tensor, Tensor | None]], noun: str = "row"
                    ) -> list[tuple[int, str, str, str]]:
    """``(position, code, problem, fix)`` of every graph whose node (or edge) feature width is
    not the majority's; the fix says to remove the ``noun`` (a manifest row, a graph)."""
    out = []
    for kind, width_of in (("node", lambda t: t[0].shape[1]),
                           ("edge", lambda t: None if t[2] is None else t[2].shape[1])):
        widths = {i: width_of(t) for i, t in tensors.items()}
        counts = Counter(widths.values())
        if len(counts) < 2:
            continue
        major, n_major = counts.most_common(1)[0]
        major_txt = "none" if major is None else str(major)
        code = "feature_width_mismatch" if kind == "node" else "edge_feature_width_mismatch"
        out += [(i, code,
                 f"{kind} features have {'no' if w is None else w} columns but {n_major} of "
                 f"{len(widths)} graphs have {major_txt} (the majority width)",
                 f"give every graph the same {kind} feature columns ({major_txt} here), or "
                 f"remove this {noun}")
                for i, w in widths.items() if w != major]
    return out


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

    On a fresh Data those hooks only end in ``_store._mapping[key] = value``, and ``Data()``
    itself only sets the instance attributes a template Data has; copying those (class
    references, immutable) and filling a new storage directly makes building 5,000 graphs ~30x
    faster than ``Data(**attrs)`` (this dominates a cached reload). ``attrs`` becomes the
    graph's mapping: do not reuse it.
    """
    data = Data.__new__(Data)
    data.__dict__.update(_DATA_TEMPLATE)
    store = GlobalStorage.__new__(GlobalStorage)
    store.__dict__["_mapping"] = attrs
    store.__dict__["_parent"] = weakref.ref(data)
    data.__dict__["_store"] = store
    return data


def _data_template() -> dict[str, Any]:
    """What ``Data()`` sets on an instance besides its storage; checked to be class references
    (shared safely between graphs), so a PyG that adds mutable state fails loudly here."""
    template = {k: v for k, v in Data().__dict__.items() if k != "_store"}
    if not all(isinstance(v, type) for v in template.values()) or set(
            GlobalStorage().__dict__) != {"_mapping"}:
        raise RuntimeError(f"unexpected torch_geometric Data internals {sorted(template)}; "
                           "gatrank's fast graph construction needs updating")
    return template


_DATA_TEMPLATE = _data_template()


def _assemble(col: _Collected, dropped: list[DataProblem]) -> GraphSet:
    parsed = col.parsed
    assert parsed.table is not None
    table = parsed.table.iloc[col.keep].reset_index(drop=True)
    return _build(table, [col.tensors[i] for i in col.keep], parsed.manifest, dropped)


def _build(table: pd.DataFrame, items: list[tuple[Tensor, Tensor, Tensor | None]],
           manifest: Path | None, dropped: list[DataProblem], dataset: str = "") -> GraphSet:
    """The GraphSet of validated ``(x, edge_index, edge_attr)`` and their table rows (id, y,
    split, group, smiles, ...), aligned; ``table`` gains num_nodes and num_edges."""
    table["num_nodes"] = [t[0].shape[0] for t in items]
    table["num_edges"] = [t[1].shape[1] for t in items]
    has_groups = table["group"].notna().any()
    codes = pd.factorize(table["group"])[0] if has_groups else np.full(len(table), -1)
    n = len(table)
    ys = torch.tensor(table["y"].to_numpy(), dtype=torch.float32).view(n, 1).unbind(0)
    groups = torch.as_tensor(codes, dtype=torch.long).view(n, 1).unbind(0)
    idxs = torch.arange(n).view(n, 1).unbind(0)
    graphs = []
    for k, ((x, ei, ea), gid, smi) in enumerate(zip(items, table["id"], table["smiles"],
                                                    strict=True)):
        attrs = {"x": x, "edge_index": ei, "y": ys[k], "group": groups[k], "idx": idxs[k],
                 "gid": gid, "smiles": smi or ""}
        if ea is not None:
            attrs["edge_attr"] = ea
        graphs.append(_make_data(attrs))
    return GraphSet(graphs, table, int(items[0][0].shape[1]), manifest, dropped, dataset)


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
        num_workers: processes for featurizing more than 500 SMILES and for loading 500 graph
            files or more (default: every core this process may use; 0 or 1: in this
            process). Graphs, their order and the problems found are the same either way.
            Graphs loaded on the pool hold views of a buffer shared with up to 200 others
            (SMILES graphs: with all the others), so ``clone()`` a graph's tensors before
            saving it on its own.

    Singleton groups are only logged, never raised or dropped: they are harmless, they just form
    no pairs (``check_manifest`` reports them as ``singleton_group`` warnings).
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    # parsing, unpacking and assembling make tens of thousands of small objects without
    # cycles: with the cycle collector on, its repeated full scans took ~40% of a cached reload
    with _gc_paused():
        col = _collect(path, allow_outside_root, cache_dir, num_workers)
        errors = [p for p in col.problems if not p.is_warning]
        if col.parsed.fatal or (errors and on_error == "raise"):
            raise DataError(errors, col.parsed.manifest)
        if not col.keep:
            raise DataError(errors + [DataProblem(
                None, None, str(col.parsed.manifest),
                "no valid graph is left after dropping bad rows", "fix the problems above",
                "no_valid_graphs")], col.parsed.manifest)
        if errors:
            assert col.parsed.table is not None
            logger.warning("dropped %d of %d manifest rows with problems (%d problems; see "
                           "GraphSet.dropped)", len(col.parsed.table) - len(col.keep),
                           len(col.parsed.table), len(errors))
        gs = _assemble(col, errors)
    warn_singleton_groups(gs)
    return gs


def warn_singleton_groups(gs: GraphSet) -> None:
    """Log (never raise) how many groups hold one graph: harmless, they just form no pairs."""
    singletons = int((gs.table["group"].value_counts() == 1).sum())
    if singletons:
        logger.warning("%d group(s) have a single graph and contribute no ranking pairs",
                       singletons)
