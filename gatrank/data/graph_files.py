"""Graph files (.pt, .json, .graphml, .gml, .npz) -> raw tensors, and the per-graph checks.

A loader returns ``{"x", "edge_index", "edge_attr"}`` (values may be None) or raises
``_FileProblem``; ``_check_graph`` turns that into validated tensors or a list of ``(code,
problem, fix)``; ``_load_file`` does both for one manifest row (in this process or in a worker
of the loading pool, see :mod:`gatrank.data.parallel`). The same checks and codes apply to
graphs already in memory (:func:`graph_problems`), so a graph has one set of problem codes
wherever it came from.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data

from gatrank.data.problems import DataProblem, UnsafeFileError, _FileProblem
from gatrank.data.safe_load import UnsafeTorchError, safe_torch_load

__all__ = ["graph_problems"]

_GRAPH_SUFFIXES = (".pt", ".json", ".graphml", ".gml", ".npz")


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


_Graph = tuple[Tensor, Tensor, Tensor | None]  # (x, edge_index, edge_attr), checked
_Found = list[tuple[str, str, str]]  # (code, problem, fix) of each problem found


def _load_file(rel: str, root: Path) -> tuple[_Graph | None, _Found]:
    """Load and check the graph file ``rel`` (as written in the manifest; relative to ``root``
    unless absolute): its checked tensors, or None and every problem found.

    Raises :class:`UnsafeTorchError` (the installed torch, not this file: no ``.pt`` file can be
    read, so the caller says it once instead of once per row).
    """
    full = Path(rel) if Path(rel).is_absolute() else root / rel
    try:
        if not full.is_file():
            raise _FileProblem("missing_file", f"graph file {rel!r} does not exist "
                               f"(looked for {full.absolute()})", "check the path: it is "
                               "relative to the manifest's folder")
        raw = _LOADERS[full.suffix.lower()](full)
    except _FileProblem as fp:
        return None, [(fp.code, fp.problem, fp.fix)]
    except UnsafeTorchError:
        raise
    except UnsafeFileError as exc:
        return None, [("unsafe_file", str(exc), "re-save it with plain tensors: "
                       "torch.save({'x': x, 'edge_index': edge_index}, path), or torch.save(Data)")]
    except Exception as exc:  # parsers raise many exception types on corrupt input
        msg = str(exc).split(". ")[0].splitlines()[0][:200] if str(exc) else ""
        return None, [("unreadable_file", f"cannot read {rel!r}: {type(exc).__name__}: {msg}",
                       "the file is corrupt or truncated, or not in the format its extension "
                       "says; re-export it")]
    return _check_graph(raw)


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


def _target_problems(y: Tensor | None) -> list[tuple[str, str, str]]:
    """A graph's own target (files carry none: the manifest's ``y`` is checked per row)."""
    if y is None or bool(torch.isfinite(y).all()):
        return []
    code = "nan_target" if bool(torch.isnan(y).any()) else "inf_target"
    return [(code, f"target is {y.reshape(-1).tolist()}",
             "give every graph a finite target or drop it")]


def graph_problems(graphs: Sequence[Data]) -> list[DataProblem]:
    """Validate graphs already in memory with the checks and codes a graph file gets.

    For graphs that did not come through a manifest (or were edited after loading): the
    per-graph checks of a loaded file (missing or malformed ``x``, no nodes, NaN/Inf features,
    no edges, a malformed or out-of-range ``edge_index``, a mismatched or non-finite
    ``edge_attr``), plus a NaN/Inf target ``y`` (``nan_target``, ``inf_target``).

    Returns:
        :class:`~gatrank.data.DataProblem` s with ``line`` and ``file`` None and ``id`` the
        graph's ``gid`` (its position without one); empty when every graph is usable.
    """
    problems = []
    for i, g in enumerate(graphs):
        gid = str(getattr(g, "gid", "") or i)
        _, found = _check_graph({k: getattr(g, k, None) for k in ("x", "edge_index", "edge_attr")})
        found += _target_problems(getattr(g, "y", None))
        problems += [DataProblem(None, gid, None, problem, fix, code)
                     for code, problem, fix in found]
    return problems
