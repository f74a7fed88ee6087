"""03_overfit's signal trace: the initial model is the one training starts from, the traces
are taken on the overfit graphs, and the figure draws every module in forward order with the
culprit ringed where the spread across graphs dies."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch_geometric.data import Batch
from torch_geometric.nn import GCNConv, global_mean_pool

from gatrank import plots
from gatrank.config import Config, overfit_config
from gatrank.data import GraphSet
from gatrank.doctor.trace import signal_trace
from gatrank.model import adapt_forward, build_model
from gatrank.notebook.trace import initial_model, overfit_batch, overfit_traces
from gatrank.training import TrainResult, train

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def gs(make_graphs) -> GraphSet:
    """10 path graphs of 4 nodes with 3 random features, y = 0..9, as a manifest's GraphSet."""
    graphs = make_graphs(k=10, n=4, f=3)
    for i, g in enumerate(graphs):
        g.idx, g.gid, g.smiles = torch.tensor([i]), f"g{i}", ""
    table = pd.DataFrame({"id": [g.gid for g in graphs], "y": [float(g.y) for g in graphs],
                          "split": None, "group": None})
    return GraphSet(graphs, table, 3, Path("manifest.csv"))


def _config(n: int = 8, epochs: int = 3, **extra) -> Config:
    small = {"model.hidden_dim": 8, "model.heads": 2, "model.num_layers": 2,
             "training.device": "cpu", "training.seed": 3, **extra}
    return overfit_config(Config().updated(small), n).updated({"training.epochs": epochs,
                                                               "training.log_every": 1})


class _Capture:
    """A model factory for ``train`` that keeps the weights of the model as built."""

    def __init__(self, cfg: Config, gs: GraphSet, spec: str = ""):
        self.cfg, self.gs, self.spec, self.state = cfg, gs, spec, None

    def __call__(self, in_channels: int) -> nn.Module:
        model = build_model(in_channels, self.cfg.model, self.spec, edge_dim=self.gs.edge_dim)
        self.state = {k: v.clone() for k, v in model.state_dict().items()}
        return model


def _same_weights(model: nn.Module, state: dict) -> bool:
    mine = model.state_dict()
    return mine.keys() == state.keys() and all(torch.equal(mine[k], state[k]) for k in state)


@pytest.mark.parametrize("spec, kwargs", [("", {}),
                                          ("custom_plugins:PyGGCN", {"hidden_channels": 8})])
def test_initial_model_is_the_model_training_starts_from(gs, spec, kwargs):
    cfg = _config(**({"model.kwargs": kwargs} if kwargs else {}))
    capture = _Capture(cfg, gs, spec)
    train(cfg, graphs=gs, model=capture, progress=False)
    assert _same_weights(initial_model(gs, cfg, spec), capture.state)
    other_seed = cfg.updated({"training.seed": 4})
    assert not _same_weights(initial_model(gs, other_seed, spec), capture.state)


def test_initial_model_leaves_the_random_states_as_they_were(gs):
    cfg = _config()
    torch.manual_seed(11)
    np.random.seed(11)
    expected = torch.rand(3), np.random.rand(3)
    torch.manual_seed(11)
    np.random.seed(11)
    initial_model(gs, cfg)
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])


def test_overfit_batch_is_the_overfit_graphs_in_order(gs):
    batch = overfit_batch(gs, _config(n=6))
    assert batch.num_graphs == 6
    assert batch.gid == [f"g{i}" for i in range(6)]
    assert overfit_batch(gs, _config(n=6).updated({"training.overfit_n": 0})).num_graphs == 10


def test_overfit_traces_trace_the_initial_and_the_trained_model_on_the_same_batch(gs):
    cfg = _config(epochs=5)
    capture = _Capture(cfg, gs)
    result = train(cfg, graphs=gs, model=capture, progress=False)
    traces = overfit_traces(gs, cfg, result)
    assert json.loads(json.dumps(traces)) == traces
    built = build_model(gs.num_features, cfg.model)
    built.load_state_dict(capture.state)
    batch = overfit_batch(gs, cfg)
    assert traces["init"] == signal_trace(built, batch).to_dict()
    assert traces["end"] == signal_trace(result.model, batch).to_dict()
    assert traces["init"]["num_graphs"] == traces["end"]["num_graphs"] == 8
    assert traces["init"]["scores_std"] != traces["end"]["scores_std"]  # training moved it
    read_back = TrainResult(model=None, history=result.history, summary={}, splits={})
    assert overfit_traces(gs, cfg, read_back) is None


# --------------------------------------------------------------------------- the figure


class _Head(nn.Module):
    def __init__(self, tail: list[nn.Module], softmax: bool = False):
        super().__init__()
        self.conv = GCNConv(3, 16)
        self.head = nn.Sequential(nn.Linear(16, 1), *tail)
        self.softmax = softmax

    def forward(self, x, edge_index, batch):
        out = self.head(global_mean_pool(self.conv(x, edge_index).relu(), batch))
        return out.softmax(-1) if self.softmax else out


def _trace(gs: GraphSet, tail=(), softmax=False) -> dict:
    torch.manual_seed(0)
    batch = Batch.from_data_list(gs.graphs[:6])
    return signal_trace(adapt_forward(_Head(list(tail), softmax)), batch).to_dict()


def _named(fig, prefix: str):
    return [t for t in fig.data if (t.name or "").startswith(prefix)]


def test_figure_rings_the_culprit_on_the_floor_where_the_spread_dies(gs):
    init, end = _trace(gs, [nn.LayerNorm(1)]), _trace(gs)
    fig = plots.signal_trace(init, end)
    paths = [m["path"] for m in init["modules"]]
    assert list(fig.layout.xaxis.categoryarray) == paths + ["scores"]
    assert fig.layout.yaxis.type == "log"
    line = _named(fig, "at initialisation")[0]
    floor = _named(fig, "std 0")[0].y[0]
    assert list(line.x) == paths + ["scores"]
    drawn = dict(zip(line.x, line.y, strict=True))
    assert drawn["head.1"] == floor and drawn["scores"] == floor  # LayerNorm(1): std 0
    assert drawn["head.0"] == pytest.approx(init["modules"][paths.index("head.0")]["graph_std"])
    assert 0 < floor < min(v for v in drawn.values() if v != floor) / 5
    rings = _named(fig, "culprit")
    assert len(rings) == 1 and rings[0].name == "culprit at initialisation: constant_output_layer"
    assert list(rings[0].x) == ["head.1"] and rings[0].y[0] == floor
    assert rings[0].hovertext[0] == init["culprit"]["evidence"]
    assert len(_named(fig, "after training")) == 1  # end has no culprit: no ring


def test_figure_rings_the_scores_for_a_forward_culprit_and_draws_init_alone(gs):
    trace = _trace(gs, softmax=True)
    assert trace["culprit"]["where"] == "forward"
    fig = plots.signal_trace(trace)
    assert not _named(fig, "after training")
    (ring,) = _named(fig, "culprit")
    assert list(ring.x) == ["scores"]
    hover = _named(fig, "at initialisation")[0].hovertext
    assert any(h.startswith("head.0 (Linear(16, 1))") for h in hover)
