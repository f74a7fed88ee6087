"""A user's PyG dataset (``--dataset SPEC``) read into a :class:`GraphSet` with a manifest's
checks.

``SPEC`` is either

- an import string ``package.module:name`` naming a PyG ``Dataset``/``InMemoryDataset``
  instance, a sequence of ``Data``, or a callable (a class or a function, called with no
  arguments) that returns one; or
- a path to a ``.pt`` file holding a list of ``Data`` or an ``InMemoryDataset``'s processed file
  (the collated ``(data, slices)`` form, possibly with a third element, the data class), read
  with :func:`~gatrank.data.safe_load.safe_torch_load` (never unpickling other objects).

or the graphs themselves, in memory: a PyG ``Dataset``/``InMemoryDataset`` instance or a
sequence of ``Data`` (named in messages as ``<list of 40 graphs>``; see
:mod:`gatrank.data.sources` for everything a notebook may hold).

Each graph's target is its ``y`` (exactly one value). The optional attributes ``id`` (or
``name``, or ``gid`` as gatrank's own graphs carry it), ``group``, ``split`` and ``smiles`` play
the roles of the manifest's columns (an integer ``group`` of -1 means none, as in gatrank's
graphs). Every graph gets the checks a manifest row and its graph file get, with the same
problem codes, each problem naming the graph's index and id; integer-typed ``x`` or
``edge_attr`` (what ``torch_geometric.utils.from_smiles`` makes) is a problem, never cast
silently.
"""

from __future__ import annotations

import logging
import math
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.data.separate import separate

from gatrank.data.graph_files import _as_tensor, _check_graph, _target_problems
from gatrank.data.graphset import (
    GraphSet,
    _build,
    _gc_paused,
    _width_problems,
    warn_singleton_groups,
)
from gatrank.data.manifest import _check_split, _duplicate_ids, _singleton_groups
from gatrank.data.problems import DataError, DataProblem, UnsafeFileError, _FileProblem
from gatrank.data.safe_load import safe_torch_load
from gatrank.plugins import load_object

logger = logging.getLogger(__name__)

__all__ = ["load_dataset", "is_dataset_file", "memory_label"]

_ID_ATTRS = ("id", "name", "gid")
_INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
_FLOAT_FIX = ("featurize with gatrank's featurizer (gatrank.data.featurize_smiles(smiles) gives "
              "one-hot float32 features), or, if the numbers are real quantities, ")


class _SourceProblem(Exception):
    """Internal: the dataset as a whole cannot be read (no graph can be checked)."""

    def __init__(self, code: str, problem: str, fix: str):
        super().__init__(problem)
        self.code, self.problem, self.fix = code, problem, fix


def is_dataset_file(spec: str) -> bool:
    """True when ``spec`` names a file (a ``.pt`` path) rather than ``package.module:name``."""
    return spec.lower().endswith(".pt") or ":" not in spec or Path(spec).exists()


# --------------------------------------------------------------------------- reading


def _from_file(spec: str) -> Sequence:
    path = Path(spec).expanduser()
    if not path.is_file():
        raise _SourceProblem(
            "dataset_not_found", f"dataset file {spec} does not exist or is not a file",
            "pass a .pt file of a list of Data (torch.save(data_list, path)) or an "
            "InMemoryDataset's processed file, or an import string 'package.module:name'")
    try:
        obj = safe_torch_load(path)
    except UnsafeFileError as exc:
        raise _SourceProblem("unsafe_file", str(exc), "re-save it with plain tensors: "
                             "torch.save([Data(x=..., edge_index=..., y=...), ...], path), or "
                             "InMemoryDataset.save(data_list, path)") from None
    except Exception as exc:  # torch raises many exception types on corrupt input
        raise _SourceProblem("unreadable_file", f"cannot read {spec}: {type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:200] if str(exc) else ''}",
                             "the file is corrupt or truncated, or not a torch.save file; "
                             "save it again") from None
    if isinstance(obj, (list, tuple)) and len(obj) in (2, 3) and \
            isinstance(obj[0], (Mapping, Data)) and isinstance(obj[1], Mapping):
        return _separate(obj[0], obj[1], spec)
    if isinstance(obj, (list, tuple)):
        return list(obj)
    raise _SourceProblem(
        "not_a_dataset", f"{spec} holds a {type(obj).__name__}, not a list of Data or an "
        "InMemoryDataset's processed (data, slices) file",
        "torch.save([data_0, data_1, ...], path), or InMemoryDataset.save(data_list, path)")


def _separate(data: Mapping | Data, slices: Mapping, spec: str) -> list[Data]:
    """The graphs of an InMemoryDataset's collated ``(data, slices)``, as its ``get`` makes
    them (the same PyG ``separate`` call)."""
    batch = data if isinstance(data, Data) else Data.from_dict(dict(data))
    sizes = {len(s) - 1 for s in slices.values() if isinstance(s, Tensor) and s.dim() == 1}
    if len(sizes) != 1:
        raise _SourceProblem("not_a_dataset", f"{spec}: the slices of its attributes give "
                             f"different numbers of graphs {sorted(sizes)}",
                             "save the dataset again with InMemoryDataset.save(data_list, path)")
    return [separate(cls=Data, batch=batch, idx=i, slice_dict=slices, decrement=False)
            for i in range(sizes.pop())]


def _raised(exc: BaseException) -> str:
    """``Type: message (at file.py:line in function)``, the frame being where it was raised
    (the traceback itself is the DataError's cause, shown with ``--debug``)."""
    frames = traceback.extract_tb(exc.__traceback__)
    at = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno} in {frames[-1].name})" \
        if frames else ""
    return f"{type(exc).__name__}: {exc}{at}"


def _is_sequence(obj: Any) -> bool:
    """A dataset instance or a sequence of graphs (a class has ``__len__`` too: not one)."""
    return (hasattr(obj, "__len__") and hasattr(obj, "__getitem__")
            and not isinstance(obj, (type, str, bytes, Mapping, Tensor, Data)))


def _from_import(spec: str) -> Sequence:
    try:
        obj = load_object(spec, what="dataset", callable_only=False)
    except ValueError as exc:
        raise _SourceProblem("dataset_not_found", str(exc),
                             "name a Dataset, a list of Data, or a function returning one, as "
                             "'package.module:name' (the module importable from here)") from None
    if not _is_sequence(obj) and callable(obj):
        name = getattr(obj, "__name__", type(obj).__name__)
        try:
            obj = obj()
        except Exception as exc:  # the user's code: report it, keep its traceback as the cause
            raise _SourceProblem(
                "dataset_error", f"calling {name}() (no arguments) raised {_raised(exc)}",
                "fix the dataset code, or name a function that builds the dataset with no "
                "arguments (gatrank train --debug shows the traceback)") from exc
    if not _is_sequence(obj):
        raise _SourceProblem(
            "not_a_dataset", f"{spec} gives a {type(obj).__name__}, not a PyG Dataset or a "
            "sequence of Data", "name a Dataset/InMemoryDataset instance, a list of Data, or a "
            "class or function that returns one when called with no arguments")
    return obj


def memory_label(graphs: Sequence) -> str:
    """How messages name graphs held in memory: ``<list of 40 graphs>``,
    ``<ZINC of 12000 graphs>``."""
    n = len(graphs)
    return f"<{type(graphs).__name__} of {n} graph{'s' if n != 1 else ''}>"


def _read(spec: str, graphs: Sequence | None = None) -> list[Any]:
    """The items of the dataset ``spec`` names, or of ``graphs`` (in memory, ``spec`` its
    label)."""
    if graphs is not None:
        source = graphs
    else:
        source = _from_file(spec) if is_dataset_file(spec) else _from_import(spec)
    items = []
    for i in range(len(source)):
        try:
            items.append(source[i])  # a Dataset's get() and transform are the user's code
        except Exception as exc:
            raise _SourceProblem("dataset_error", f"reading graph {i} raised {_raised(exc)}",
                                 "fix the dataset's get() or transform (gatrank train --debug "
                                 "shows the traceback)") from exc
    if not items:
        raise _SourceProblem("empty_dataset", f"dataset {spec} has no graphs",
                             "give at least two graphs (ranking needs pairs)")
    return items


# --------------------------------------------------------------------------- checking


def _text(value: Any) -> str | None:
    """An attribute as text (a one-element tensor by its value); None when missing/empty."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            return str(value.tolist())
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = None if value is None else str(value).strip()
    return text or None


def _target(y: Any, found: list[tuple[str, str, str]]) -> float:
    """``y`` as a float (NaN unless it is one finite number); its problems go into ``found``."""
    if y is None:
        found.append(("missing_target", "has no target y",
                      "set data.y = torch.tensor([value]) on every graph (larger = should "
                      "rank higher)"))
        return math.nan
    try:
        t = _as_tensor(y, "y")
    except _FileProblem:
        t = None
    if t is None or not (t.dtype.is_floating_point or t.dtype in _INT_DTYPES):
        found.append(("non_numeric_target", f"target y {y!r} is not a number",
                      "set data.y = torch.tensor([value]) with a float value"))
        return math.nan
    if t.numel() != 1:
        found.append(("target_shape", f"y has {t.numel()} values (shape {list(t.shape)}); "
                      "gatrank ranks graphs by one target each",
                      "give every graph exactly one target: data.y = torch.tensor([value]) "
                      "(several tasks: pick the one to rank by, e.g. data.y = data.y[:, 0]; "
                      "per-node values: aggregate them to one per graph)"))
        return math.nan
    t = t.double().reshape(1)
    found += _target_problems(t)
    return float(t)


def _float_features(data: Data, found: list[tuple[str, str, str]]) -> None:
    """Integer (or bool) ``x``/``edge_attr``: a problem naming the dtype and the fix."""
    for key, code, what in (("x", "integer_features", "node features x"),
                            ("edge_attr", "integer_edge_features", "edge features edge_attr")):
        value = data[key] if key in data else None
        if isinstance(value, Tensor) and not value.dtype.is_floating_point \
                and not value.dtype.is_complex:
            found.append((code, f"{what} have dtype {value.dtype}, not a float type (integer "
                          "codes such as torch_geometric.utils.from_smiles makes are "
                          "categories, and a model would read them as magnitudes)",
                          _FLOAT_FIX + f"data.{key} = data.{key}.float()"))


def _graph(data: Data, found: list[tuple[str, str, str]]
           ) -> tuple[Tensor, Tensor, Tensor | None] | None:
    """The graph's tensors, checked as a graph file's are; None when anything is wrong."""
    _float_features(data, found)
    try:
        raw = {k: (None if data[k] is None else _as_tensor(data[k], k)) if k in data else None
               for k in ("x", "edge_index", "edge_attr")}
    except _FileProblem as fp:
        found.append((fp.code, fp.problem, fp.fix))
        return None
    tensors, problems = _check_graph(raw)
    found += problems
    return tensors


def _group(value: Any) -> str | None:
    """The group key; an integer -1 (gatrank's own 'no group') is none."""
    text = _text(value)
    return None if text == "-1" and not isinstance(value, str) else text


def _item_row(i: int, item: Any) -> tuple[dict[str, Any], Any, list[tuple[str, str, str]]]:
    """One item as a table row, its checked tensors (or None), and its ``(code, problem, fix)``
    findings."""
    row: dict[str, Any] = {"id": str(i), "y": math.nan, "split": None, "group": None,
                           "smiles": None, "path": None, "line": None, "index": i}
    if not isinstance(item, Data):
        return row, None, [("not_a_graph", f"item is a {type(item).__name__}, not a "
                            "torch_geometric.data.Data", "make every item of the dataset a "
                            "Data(x=..., edge_index=..., y=...)")]
    row["id"] = next((t for k in _ID_ATTRS if k in item and (t := _text(item[k]))), str(i))
    found: list[tuple[str, str, str]] = []
    row["y"] = _target(item["y"] if "y" in item else None, found)
    tensors = _graph(item, found)
    for key, convert in (("split", _text), ("group", _group), ("smiles", _text)):
        row[key] = convert(item[key]) if key in item else None
    if row["split"] is not None:
        split_found: list[tuple[str, str, str]] = []
        row["split"] = _check_split(row["split"], split_found)
        found += [(code, problem, fix) for problem, fix, code in split_found]
    return row, tensors, found


def _all_or_none(rows: list[dict[str, Any]], key: str, spec: str) -> list[DataProblem]:
    """A ``split``/``group`` that some graphs have must be on all of them."""
    if all(r[key] is None for r in rows):
        return []
    fix = ("give every graph a split (train, val or test), or none of them for a seeded random "
           "split" if key == "split" else
           "give every graph the group (query id) it belongs to, or none of them")
    return [DataProblem(None, r["id"], spec, f"has no {key} but other graphs do", fix,
                        f"missing_{key}", r["index"]) for r in rows if r[key] is None]


@dataclass
class _DatasetCollected:
    spec: str
    num_items: int
    problems: list[DataProblem]
    source_error: _SourceProblem | None  # the dataset cannot be read: no graph was checked
    table: pd.DataFrame | None
    keep: list[int]  # positions of valid graphs
    tensors: dict[int, tuple[Tensor, Tensor, Tensor | None]]


def _collect_dataset(spec: str | Sequence) -> _DatasetCollected:
    """Read and check every graph, collecting every problem instead of stopping (``spec``: a
    dataset spec, or graphs in memory)."""
    graphs = None
    if not isinstance(spec, str):
        graphs, spec = spec, memory_label(spec)
    try:
        items = _read(spec, graphs)
    except _SourceProblem as sp:
        return _DatasetCollected(spec, 0, [DataProblem(None, None, spec, sp.problem, sp.fix,
                                                       sp.code)], sp, None, [], {})
    rows, problems = [], []
    tensors: dict[int, tuple[Tensor, Tensor, Tensor | None]] = {}
    for i, item in enumerate(items):
        row, graph, found = _item_row(i, item)
        rows.append(row)
        if graph is not None:
            tensors[i] = graph
        problems += [DataProblem(None, row["id"], spec, problem, fix, code, i)
                     for code, problem, fix in found]
    problems += _all_or_none(rows, "split", spec) + _all_or_none(rows, "group", spec)
    graphs = [r for r, item in zip(rows, items, strict=True) if isinstance(item, Data)]
    problems += _duplicate_ids(graphs, spec) + _singleton_groups(graphs, spec)
    bad = {p.index for p in problems if not p.is_warning}
    widths = {i: t for i, t in tensors.items() if i not in bad}
    problems += [DataProblem(None, rows[i]["id"], spec, problem, fix, code, i)
                 for i, code, problem, fix in _width_problems(widths, noun="graph")]
    bad = {p.index for p in problems if not p.is_warning}
    problems.sort(key=lambda p: p.index)
    table = pd.DataFrame(rows, columns=["id", "y", "split", "group", "smiles", "path", "line",
                                        "index"], dtype=object)
    table = table.astype({"y": "float64", "index": "int64"})
    keep = [i for i in sorted(tensors) if i not in bad]
    return _DatasetCollected(spec, len(items), problems, None, table, keep, tensors)


def _graphset(col: _DatasetCollected, dropped: list[DataProblem]) -> GraphSet:
    assert col.table is not None
    table = col.table.iloc[col.keep].reset_index(drop=True)
    return _build(table, [col.tensors[i] for i in col.keep], None, dropped, dataset=col.spec)


def load_dataset(spec: str | Sequence, *, on_error: str = "raise") -> GraphSet:
    """Read and validate every graph of a PyG dataset (see the module docstring for ``spec``).

    Args:
        spec: ``package.module:name`` or a ``.pt`` path; or the graphs themselves, a PyG
            ``Dataset`` instance or a sequence of ``Data``.
        on_error: ``"raise"`` raises :class:`DataError` listing every problem (each with the
            graph's ``index`` and id); ``"skip"`` drops the bad graphs, records their problems
            in ``GraphSet.dropped`` and logs a warning. Dataset-level problems (the spec cannot
            be read) always raise.

    Returns:
        A :class:`GraphSet` like a manifest's: ``manifest`` None, ``dataset`` = ``spec``.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    col = _collect_dataset(spec)
    spec = col.spec
    errors = [p for p in col.problems if not p.is_warning]
    if col.source_error is not None:  # the user's exception (if any) stays the cause
        raise DataError(errors, dataset=spec) from col.source_error.__cause__
    if errors and on_error == "raise":
        raise DataError(errors, dataset=spec)
    if not col.keep:
        raise DataError(errors + [DataProblem(
            None, None, spec, "no valid graph is left after dropping bad graphs",
            "fix the problems above", "no_valid_graphs")], dataset=spec)
    if errors:
        logger.warning("dropped %d of %d graphs of dataset %s with problems (%d problems; see "
                       "GraphSet.dropped)", col.num_items - len(col.keep), col.num_items, spec,
                       len(errors))
    with _gc_paused():
        gs = _graphset(col, errors)
    warn_singleton_groups(gs)
    return gs
