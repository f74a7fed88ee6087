"""What the doctor diagnoses: the graphs, from wherever they are (a manifest, a dataset, graphs
in memory), checked, with the problems the data stage judges."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from gatrank.checks.static import check_graphs
from gatrank.config import Config
from gatrank.data import GraphSet, check_dataset, load_dataset
from gatrank.data.sources import graph_source
from gatrank.datasets import check_data, load_data, with_source
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
    if graphs is None:
        data = with_source(cfg.data, manifest, dataset)
        report = check_data(data)
        source = (f"dataset {data.dataset}" if data.dataset else
                  str(report.summary["manifest"]))

        def load(on_error: str) -> GraphSet:
            return load_data(dataclasses.replace(data, on_error=on_error))
    else:
        src = graph_source(graphs)
        if src.graphset is not None:
            return src.graphset, check_graphs(src.graphset.graphs), [], "in-memory graphs"
        if src.graphs is None:  # a path or an import string given as graphs
            return load_inputs(None, src.manifest or None, src.dataset or None, cfg)
        report, source = check_dataset(src.graphs), src.label

        def load(on_error: str) -> GraphSet:
            return load_dataset(src.graphs, on_error=on_error)
    if report.errors and cfg.data.on_error == "raise":
        if not droppable(report.errors, report.summary["num_rows"]):
            return None, report.problems, [], source
        return load("skip"), report.problems, [], source
    gs = load(cfg.data.on_error)
    return gs, check_graphs(gs.graphs), list(gs.dropped), source
