"""The signal trace on models built as users build them (PyG convs, global_mean_pool, a head),
each with one known way of making every graph's score the same: the culprit must be the module
(or the forward code) the model put there, with the cause it points to; and the numbers against
a hand computation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn
from torch_geometric.data import Batch, Data
from torch_geometric.nn import GATConv, GCNConv, global_mean_pool

from gatrank.config import ModelConfig
from gatrank.doctor.trace import short_type, signal_trace
from gatrank.model import adapt_forward, build_model

F, H = 3, 16  # node features, hidden width (neither equals the batch's 6 graphs or 24 nodes)


def _batch(k: int = 6, seed: int = 0) -> Batch:
    """``k`` path graphs of 3-5 nodes with random features: 6 graphs, 24 nodes by default."""
    gen = torch.Generator().manual_seed(seed)
    graphs = []
    for i in range(k):
        n = 3 + i % 3
        x = torch.randn(n, F, generator=gen)
        src = torch.arange(n - 1)
        ei = torch.stack([torch.cat([src, src + 1]), torch.cat([src + 1, src])])
        graphs.append(Data(x=x, edge_index=ei, y=torch.tensor([float(x.sum())])))
    return Batch.from_data_list(graphs)


class UserGCN(nn.Module):
    """Two GCN layers, mean pooling and a head, written the PyG way."""

    def __init__(self, head: nn.Module | None = None, softmax: bool = False) -> None:
        super().__init__()
        self.conv1 = GCNConv(F, H)
        self.conv2 = GCNConv(H, H)
        self.head = head if head is not None else nn.Sequential(
            nn.Linear(H, H), nn.ReLU(), nn.Linear(H, 1))
        self.softmax = softmax

    def forward(self, x, edge_index, batch):
        h = self.conv1(x, edge_index).relu()
        h = self.conv2(h, edge_index).relu()
        out = self.head(global_mean_pool(h, batch))  # (G, 1)
        return torch.softmax(out, dim=-1) if self.softmax else out


def _user(head: nn.Module | None = None, **kw) -> nn.Module:
    torch.manual_seed(0)
    return adapt_forward(UserGCN(head, **kw))


def _entry(trace, path):
    return next(m for m in trace.modules if m.path == path)


# --------------------------------------------------------------------------- culprits


def test_layernorm_over_one_unit_after_the_last_linear_is_the_culprit():
    torch.manual_seed(0)
    head = nn.Sequential(nn.Linear(H, H), nn.ReLU(), nn.Linear(H, 1), nn.LayerNorm(1))
    trace = signal_trace(_user(head), _batch())
    c = trace.culprit
    assert (c.path, c.type, c.where, c.cause) == ("head.3", "LayerNorm(1)", "module",
                                                  "constant_output_layer")
    assert c.input_std > 0 and c.output_std == 0
    assert c.input_std == pytest.approx(_entry(trace, "head.2").graph_std)
    assert c.evidence.startswith(f"head.3 (LayerNorm(1)): input std {c.input_std:.3g} across "
                                 "graphs, output std 0 (every graph 0)")
    assert "size 1" in c.evidence
    assert trace.scores_std == 0 and trace.scores_constant


def test_functional_softmax_over_one_unit_in_forward_is_blamed_on_the_forward_code():
    torch.manual_seed(0)
    trace = signal_trace(_user(nn.Linear(H, 1), softmax=True), _batch())
    c = trace.culprit
    assert (c.where, c.path, c.type, c.cause) == ("forward", "head", "Linear(16, 1)",
                                                  "constant_output_layer")
    assert not any(m.constant for m in trace.modules)  # every module's output varies
    assert trace.scores_std == 0 and trace.scores_constant and trace.score_shape == [6, 1]
    lin = _entry(trace, "head")
    assert c.input_std == lin.graph_std > 0 and c.output_std == 0
    assert f"head (Linear(16, 1)), has output std {lin.graph_std:.3g}" in c.evidence
    assert "every graph 1" in c.evidence and "forward code after head" in c.evidence


def test_forward_culprit_names_the_last_child_not_the_container_returning_its_output():
    torch.manual_seed(0)
    trace = signal_trace(_user(softmax=True), _batch())  # head = Sequential(..., Linear(16, 1))
    assert trace.modules[-1].path == "head"
    assert (trace.culprit.where, trace.culprit.path) == ("forward", "head.2")
    assert trace.culprit.type == "Linear(16, 1)"


def test_dead_relu_in_the_head_is_dead_activations():
    torch.manual_seed(0)
    head = nn.Sequential(nn.Linear(H, H), nn.ReLU(), nn.Linear(H, 1))
    nn.init.constant_(head[0].bias, -100.0)
    trace = signal_trace(_user(head), _batch())
    c = trace.culprit
    assert (c.path, c.type, c.cause) == ("head.1", "ReLU", "dead_activations")
    assert _entry(trace, "head.1").zero_fraction == 1.0
    assert _entry(trace, "head.0").constant is False
    assert "100% of its outputs are 0" in c.evidence


def test_all_zero_initialisation_is_blamed_on_the_first_layer_with_its_weight():
    model = _user()
    for name, p in model.named_parameters():
        if name.endswith("weight"):
            nn.init.zeros_(p)
    trace = signal_trace(model, _batch())
    c = trace.culprit
    assert (c.path, c.type, c.cause) == ("conv1.lin", "Linear(3, 16)", "bad_initialization")
    assert trace.modules[0].path == "conv1.lin"  # the first call to complete
    assert "conv1.lin.weight is constant (every entry 0)" in c.evidence


def test_sigmoid_driven_to_one_is_a_saturated_score_head():
    torch.manual_seed(0)
    head = nn.Sequential(nn.Linear(H, 1), nn.Sigmoid())
    nn.init.constant_(head[0].bias, 100.0)
    trace = signal_trace(_user(head), _batch())
    c = trace.culprit
    assert (c.path, c.type, c.cause) == ("head.1", "Sigmoid", "score_head_saturated")
    assert _entry(trace, "head.1").zero_fraction == 0 and c.input_std > 0
    assert "every graph 1" in c.evidence


@pytest.mark.parametrize("training", [True, False])
def test_healthy_gatranker_has_no_culprit_and_every_module_varies(training):
    torch.manual_seed(0)
    model = build_model(F, ModelConfig())
    model.train(training)
    trace = signal_trace(model, _batch())
    assert model.training is training
    assert trace.culprit is None
    assert trace.scores_constant is False and trace.scores_std > 0 and trace.score_shape == [6]
    assert all(m.level in ("graph", "node") for m in trace.modules)
    assert all(m.graph_std > 0 and not m.constant for m in trace.modules)
    paths = [m.path for m in trace.modules]
    # forward order: dropout before each conv, a leaf before its container
    assert paths[:4] == ["dropout", "convs.0.lin", "convs.0.aggr_module", "convs.0"]
    assert paths[-2:] == ["score_head.3", "score_head"]
    assert _entry(trace, "convs.0").type == "GATConv(3, 16, heads=4)"


def test_healthy_user_gat_has_no_culprit():
    class UserGAT(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = GATConv(F, 8, heads=2)
            self.lin = nn.Linear(16, 1)

        def forward(self, x, edge_index, batch):
            h = torch.nn.functional.elu(self.conv(x, edge_index))
            return self.lin(global_mean_pool(h, batch)).squeeze(-1)

    torch.manual_seed(0)
    trace = signal_trace(adapt_forward(UserGAT()), _batch())
    assert trace.culprit is None and trace.scores_std > 0
    assert [m.path for m in trace.modules][-2:] == ["conv", "lin"]


# --------------------------------------------------------------------------- the numbers


class Probe(nn.Module):
    """Node features and their mean pool through identities, so the trace measures known
    tensors."""

    def __init__(self):
        super().__init__()
        self.nodes = nn.Identity()
        self.graphs = nn.Identity()
        self.lin = nn.Linear(F, 1)

    def forward(self, batch):
        x = self.nodes(batch.x)
        return self.lin(self.graphs(global_mean_pool(x, batch.batch))).squeeze(-1)


def _rms_std(rows: np.ndarray) -> float:
    """Population std per column, root-mean-square over columns."""
    return float(np.sqrt((rows.std(axis=0) ** 2).mean()))


def test_graph_and_node_spreads_match_a_hand_computation():
    b = _batch()
    b.x[::4, 1] = 0.0  # some exact zeros
    trace = signal_trace(Probe(), b)
    x = b.x.numpy().astype(np.float64)
    owner = b.batch.numpy()
    means = np.stack([x[owner == gi].mean(axis=0) for gi in range(b.num_graphs)])  # (G, F)
    nodes, graphs = _entry(trace, "nodes"), _entry(trace, "graphs")
    assert nodes.level == "node" and graphs.level == "graph"
    assert nodes.shape == [24, F] and graphs.shape == [6, F]
    assert nodes.graph_std == pytest.approx(_rms_std(means), rel=1e-6)
    assert nodes.node_std == pytest.approx(_rms_std(x), rel=1e-6)
    assert graphs.graph_std == pytest.approx(_rms_std(means), rel=1e-6)
    assert graphs.node_std is None
    assert nodes.zero_fraction == pytest.approx(float((x == 0).mean()))
    assert nodes.input_graph_std == pytest.approx(nodes.graph_std)
    assert graphs.input_graph_std == pytest.approx(graphs.graph_std)
    scores = trace.scores_std
    lin = _entry(trace, "lin")
    assert scores == pytest.approx(lin.graph_std)


def test_spreads_do_not_depend_on_the_order_of_the_graphs():
    torch.manual_seed(0)
    model = build_model(F, ModelConfig())
    b = _batch()
    graphs = b.to_data_list()
    shuffled = Batch.from_data_list([graphs[i] for i in (3, 0, 5, 1, 4, 2)])
    a, s = signal_trace(model, b), signal_trace(model, shuffled)
    assert [m.path for m in a.modules] == [m.path for m in s.modules]
    for ma, ms in zip(a.modules, s.modules, strict=True):
        assert ms.graph_std == pytest.approx(ma.graph_std, rel=1e-4, abs=1e-9), ma.path
    assert s.scores_std == pytest.approx(a.scores_std, rel=1e-4)


def test_constant_node_features_give_no_culprit():
    b = _batch()
    b.x = torch.ones_like(b.x)

    class Mlp(nn.Module):  # every node through the same layers: no graph differs from another
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(F, H), nn.ReLU())

        def forward(self, batch):
            return global_mean_pool(self.body(batch.x), batch.batch).sum(-1)

    torch.manual_seed(0)
    trace = signal_trace(Mlp(), b)
    assert trace.scores_constant and all(m.constant for m in trace.modules)
    assert trace.culprit is None  # the batch does not vary: no layer is to blame


# --------------------------------------------------------------------------- bookkeeping


def test_a_module_called_twice_gets_two_entries_and_hooks_are_removed():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin1, self.lin2, self.act = nn.Linear(F, H), nn.Linear(H, 1), nn.ReLU()

        def forward(self, batch):
            h = self.act(self.lin1(batch.x))
            return self.act(self.lin2(global_mean_pool(h, batch.batch))).squeeze(-1) + 1

    model = Twice().train()
    trace = signal_trace(model, _batch())
    assert [m.path for m in trace.modules] == ["lin1", "act", "lin2", "act#2"]
    assert [m.level for m in trace.modules] == ["node", "node", "graph", "graph"]
    assert all(len(m._forward_hooks) == 0 for m in model.modules())
    assert model.training


def test_an_error_in_forward_is_raised_with_hooks_removed_and_mode_restored():
    class Raises(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(F, 1)

        def forward(self, batch):
            self.lin(batch.x)
            raise RuntimeError("user bug")

    model = Raises().train()
    with pytest.raises(RuntimeError, match="user bug"):
        signal_trace(model, _batch())
    assert len(model.lin._forward_hooks) == 0 and model.training


def test_one_score_per_batch_gives_its_shape_and_no_score_spread():
    class NoBatchPool(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.lin = GCNConv(F, H), nn.Linear(H, 1)

        def forward(self, x, edge_index):
            return self.lin(self.conv(x, edge_index).mean(0))  # (1,)

    trace = signal_trace(adapt_forward(NoBatchPool()), _batch())
    assert trace.score_shape == [1]
    assert trace.scores_std is None and trace.scores_constant is None
    assert trace.culprit is None
    lin = _entry(trace, "lin")
    assert lin.level == "other" and lin.input_graph_std is None and lin.constant is False
    assert json.loads(json.dumps(trace.to_dict()))["modules"][-1]["graph_std"] is None


def test_fewer_than_two_graphs_is_refused_by_name():
    with pytest.raises(ValueError, match="at least 2 graphs, got 1"):
        signal_trace(Probe(), _batch(k=1))


def test_to_dict_is_json_and_format_lines_marks_the_culprit_and_elides():
    torch.manual_seed(0)
    head = nn.Sequential(nn.Linear(H, H), nn.ReLU(), nn.Linear(H, 1), nn.LayerNorm(1))
    trace = signal_trace(_user(head), _batch(), device="cpu")
    d = json.loads(json.dumps(trace.to_dict()))
    assert d["culprit"]["path"] == "head.3" and d["culprit"]["output_std"] == 0
    assert d["num_graphs"] == 6 and d["num_nodes"] == 24 and d["score_shape"] == [6, 1]
    assert [m["path"] for m in d["modules"]] == [m.path for m in trace.modules]
    full = trace.format_lines(limit=50)
    assert len(full) == 1 + len(trace.modules) + 1  # header, one per module, the scores
    marked = [line for line in full if "<- culprit" in line]
    assert len(marked) == 1 and marked[0].startswith("head.3") and "LayerNorm(1)" in marked[0]
    short = trace.format_lines(limit=4)
    assert any("<- culprit (constant_output_layer)" in line for line in short)
    assert any(line.startswith("... ") for line in short)
    assert len([line for line in short if not line.startswith("...")]) == 1 + 4 + 1


def test_format_lines_puts_a_forward_culprit_on_the_scores_line():
    torch.manual_seed(0)
    lines = signal_trace(_user(nn.Linear(H, 1), softmax=True), _batch()).format_lines()
    assert lines[-1].startswith("scores") and "<- culprit: forward code after head" in lines[-1]


def test_short_type_keeps_what_the_layer_is_and_drops_its_settings():
    assert short_type(nn.LayerNorm(1)) == "LayerNorm(1)"
    assert short_type(nn.Linear(64, 1)) == "Linear(64, 1)"
    assert short_type(nn.ReLU()) == "ReLU"
    assert short_type(nn.Softmax(dim=-1)) == "Softmax(dim=-1)"
    assert short_type(GATConv(9, 64, heads=4)) == "GATConv(9, 64, heads=4)"
    assert short_type(nn.BatchNorm1d(8)) == "BatchNorm1d(8)"
    assert short_type(nn.Sequential(nn.ReLU())) == "Sequential"
    assert len(short_type(nn.Conv2d(3, 8, 3, stride=2, padding=1, dilation=2))) <= 40


def test_an_in_place_relu_that_dies_is_still_the_culprit():
    torch.manual_seed(0)
    head = nn.Sequential(nn.Linear(H, H), nn.ReLU(inplace=True), nn.Linear(H, 1))
    nn.init.constant_(head[0].bias, -100.0)
    trace = signal_trace(_user(head), _batch())
    c = trace.culprit
    assert (c.path, c.cause) == ("head.1", "dead_activations")  # its input, taken before it ran
    assert c.input_std == pytest.approx(_entry(trace, "head.0").graph_std) and c.input_std > 0
    assert "mean input -10" in c.evidence


def test_a_softmax_module_over_one_unit_is_the_culprit_layer():
    torch.manual_seed(0)
    head = nn.Sequential(nn.Linear(H, 1), nn.Softmax(dim=-1))
    c = signal_trace(_user(head), _batch()).culprit
    assert (c.path, c.type, c.where, c.cause) == ("head.1", "Softmax(dim=-1)", "module",
                                                  "constant_output_layer")
    assert "every graph 1" in c.evidence and "softmax over one unit" in c.evidence
