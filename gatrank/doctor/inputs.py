"""What the doctor diagnoses: the graphs, from wherever they are (a manifest, a dataset, graphs
in memory), checked, with the problems the data stage judges."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gatrank.checks.static import check_graphs
from gatrank.config import Config
from gatrank.data.sources import GraphSource, graph_source
from gatrank.datasets import check_source, load_source
from gatrank.doctor.data_stage import droppable

__all__ = ["load_inputs"]


def load_inputs(graphs, manifest, dataset, cfg: Config) -> tuple[Any, list, list, str]:
    """(GraphSet or None, problems that count, rows dropped, where the graphs came from).

    Under ``data.on_error=raise`` a manifest (or dataset, or graphs in memory) with problems
    gives no graphs, except when they are a few rows the data stage may leave out
    (:func:`data_stage.droppable`): then the other rows are loaded and the problems returned for
    the data stage to judge.
    """
    if isinstance(dataset, Path):
        dataset = str(dataset)
    if dataset is not None and not isinstance(dataset, str):
        raise TypeError(f"dataset= takes a .pt path or an import string 'package.module:name', "
                        f"not a {type(dataset).__name__}: pass graphs held in memory as "
                        "graphs=... (a list of Data, a PyG Dataset, a DataLoader)")
    src = GraphSource(manifest=str(manifest or ""), dataset=dataset or "") if graphs is None \
        else graph_source(graphs)
    if src.graphset is not None:
        return src.graphset, check_graphs(src.graphset.graphs), [], "in-memory graphs"
    report = check_source(src, cfg.data)
    where = report.summary
    source = (src.label if src.graphs is not None else
              f"dataset {where['dataset']}" if "dataset" in where else str(where["manifest"]))
    if report.errors and cfg.data.on_error == "raise":
        if not droppable(report.errors, report.summary["num_rows"]):
            return None, report.problems, [], source
        return load_source(src, cfg.data, "skip"), report.problems, [], source
    gs = load_source(src, cfg.data)
    return gs, check_graphs(gs.graphs), list(gs.dropped), source
