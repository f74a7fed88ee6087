"""``check_manifest`` and ``check_dataset``: every problem of a manifest (or a PyG dataset) plus a
summary of its valid graphs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gatrank.data.graphset import GraphSet, _assemble, _collect
from gatrank.data.manifest import SPLITS
from gatrank.data.problems import DataProblem, _format_problems
from gatrank.data.pyg_dataset import _collect_dataset, _graphset
from gatrank.render import check_report_html

__all__ = ["CheckReport", "check_manifest", "check_dataset", "TIE_EPS"]

TIE_EPS = 1e-6


@dataclass
class CheckReport:
    """Every problem of a manifest (or dataset) plus a summary of the graphs that are valid.

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

    def _repr_html_(self) -> str:
        """The report as HTML in a notebook (:func:`gatrank.render.check_report_html`)."""
        return check_report_html(self.to_dict())

    def __str__(self) -> str:
        return self.format_table()

    def _repr_pretty_(self, p, cycle) -> None:
        """IPython's text form (a terminal, a text export): the table, not the fields."""
        p.text(self.format_table())

    def format_table(self) -> str:
        """The problems table and the summary, for the CLI."""
        s = self.summary
        where = f"dataset {s['dataset']}" if "dataset" in s else s.get("manifest")
        head = f"{len(self.errors)} error(s), {len(self.warnings)} warning(s) in {where}"
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


def _graph_summary(gs: GraphSet | None) -> dict[str, Any]:
    """The summary's statistics of the valid graphs (None each without any)."""
    summary: dict[str, Any] = {"num_graphs": 0, "num_features": None, "num_edge_features": None,
                               "nodes": None, "edges": None, "y": None, "tie_fraction": None,
                               "num_groups": None, "splits": None}
    if gs is None:
        return summary
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
    return summary


def check_manifest(path: str | Path, *, allow_outside_root: bool = False,
                   cache_dir: str | Path | None = None,
                   num_workers: int | None = None) -> CheckReport:
    """Validate a manifest and its graphs; never raises for data problems, collects them all.

    Graphs load as in :func:`~gatrank.data.load_graphs` (``num_workers`` processes for many
    graph files or SMILES, default every core), with the same problems either way.

    Summary: manifest, num_rows, num_graphs (valid), num_features, num_edge_features, nodes and
    edges {min, mean, max}, y {min, mean, std, max}, tie_fraction (pairs with ``|dy| <= 1e-6``,
    within groups when there are groups; None without pairs), num_groups (None without groups),
    splits (counts per split; None without a split column). Statistics cover valid graphs only.
    """
    col = _collect(path, allow_outside_root, cache_dir, num_workers)
    table = col.parsed.table
    gs = _assemble(col, []) if table is not None and col.keep else None
    return CheckReport(col.problems, {"manifest": str(col.parsed.manifest),
                                      "num_rows": 0 if table is None else len(table),
                                      **_graph_summary(gs)})


def check_dataset(spec: str | Sequence) -> CheckReport:
    """Validate a PyG dataset (``package.module:name`` or a ``.pt`` path, or the graphs in
    memory: a ``Dataset`` instance or a sequence of ``Data``; see
    :mod:`gatrank.data.pyg_dataset`); never raises for data problems, collects them all, each
    naming the graph's ``index`` and id.

    Summary: as :func:`check_manifest`'s, with ``dataset`` (the spec, or the graphs' label such
    as ``<list of 40 graphs>``) in place of ``manifest`` and ``num_rows`` the number of items in
    the dataset.
    """
    col = _collect_dataset(spec)
    gs = _graphset(col, []) if col.keep else None
    return CheckReport(col.problems, {"dataset": col.spec, "num_rows": col.num_items,
                                      **_graph_summary(gs)})
