"""03_overfit's signal trace: the model as training built it, before its first step, and the
model training returned, traced on the same fixed batch of the overfit graphs
(:func:`gatrank.doctor.trace.signal_trace`), so a notebook draws where graph-to-graph variation
dies at the start and at the end of the run."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn
from torch_geometric.data import Batch

from gatrank.config import Config
from gatrank.data import GraphSet
from gatrank.doctor.trace import signal_trace
from gatrank.model import build_model
from gatrank.runtime import set_seed
from gatrank.training import TrainResult

__all__ = ["TRACE_MAX_GRAPHS", "overfit_batch", "initial_model", "overfit_traces"]

TRACE_MAX_GRAPHS = 64
"""The most graphs of the fixed batch: enough for a spread across graphs, one cheap pass."""


def overfit_batch(graphs: GraphSet, config: Config) -> Batch:
    """The graphs the overfit run trains on (the first ``training.overfit_n``; all of them when
    it is 0), at most :data:`TRACE_MAX_GRAPHS`, in one batch."""
    n = config.training.overfit_n or len(graphs)
    return Batch.from_data_list([graphs[i] for i in range(min(n, len(graphs),
                                                              TRACE_MAX_GRAPHS))])


@contextmanager
def _rng_kept() -> Iterator[None]:
    """Python's, NumPy's and torch's CPU random states as they were before the block."""
    py, npy = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)


def initial_model(graphs: GraphSet, config: Config, model: str = "") -> nn.Module:
    """The model ``train(config, graphs=graphs, model=model)`` starts from, weights and all:
    built the way training builds it (seeded with ``training.seed`` just before, on CPU), with
    the caller's random states left as they were.

    Args:
        model: an import string ``package.module:Name`` (empty: gatrank's GAT), as the
            notebooks' ``model`` parameter.
    """
    with _rng_kept():
        set_seed(config.training.seed)
        return build_model(graphs.num_features, config.model, model, edge_dim=graphs.edge_dim)


def overfit_traces(graphs: GraphSet, config: Config, result: TrainResult, model: str = ""
                   ) -> dict[str, dict[str, Any]] | None:
    """``{"init": ..., "end": ...}``: the signal traces (``SignalTrace.to_dict()``) of the
    initial model (:func:`initial_model`) and of ``result.model``, on :func:`overfit_batch`;
    ``plots.signal_trace(**traces)`` draws them. None when ``result`` has no model (a run read
    from its ``metrics.jsonl``: nothing to trace)."""
    if result.model is None:
        return None
    batch = overfit_batch(graphs, config)
    return {"init": signal_trace(initial_model(graphs, config, model), batch).to_dict(),
            "end": signal_trace(result.model, batch).to_dict()}
