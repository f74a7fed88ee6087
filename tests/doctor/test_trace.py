"""The signal trace on models built as users build them (PyG convs, global_mean_pool, a head),
each with one known way of making every graph's score the same: the culprit must be the module
(or the forward code) the model put there, with the cause it points to; and the numbers against
a hand computation."""

from __future__ import annotations

import inspect
import json
import os

import numpy as np
import pytest
import torch
from torch import nn
from torch_geometric.data import Batch, Data
from torch_geometric.nn import GATConv, GCNConv, global_mean_pool

from gatrank.config import ModelConfig
from gatrank.doctor.trace import op_name, short_type, signal_trace
from gatrank.doctor.verify import model_edit, parse_identity_call
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


# --------------------------------------------------------------------------- calls in forward


def _line_of(cls: type, marker: str) -> int:
    """The line of ``cls``'s source that holds ``marker`` (a comment): where a call is."""
    lines, start = inspect.getsourcelines(cls)
    return start + next(i for i, text in enumerate(lines) if marker in text)


class OffsetRelu(nn.Module):
    """A GCN, mean pooling and a Linear whose output goes through ``torch.relu`` after an
    offset in ``forward``: dead for a large offset, healthy for a small or negative one."""

    def __init__(self, offset: float = 1000.0) -> None:
        super().__init__()
        self.conv = GCNConv(F, H)
        self.out = nn.Linear(H, 1)
        self.offset = offset

    def forward(self, x, edge_index, batch):
        h = global_mean_pool(self.conv(x, edge_index).relu(), batch)  # (G, H)
        return torch.relu(self.out(h) - self.offset).squeeze(-1)  # marker: the relu


def _offset_relu(offset: float = 1000.0, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return adapt_forward(OffsetRelu(offset))


def test_a_relu_after_an_offset_in_forward_is_named_with_its_file_and_line():
    model, b = _offset_relu(), _batch()
    trace = signal_trace(model, b)
    c = trace.culprit
    line = _line_of(OffsetRelu, "# marker: the relu")
    assert (c.where, c.path, c.type, c.cause) == ("forward", "out", "Linear(16, 1)",
                                                  "dead_activations")
    assert (c.op, c.file, c.line) == ("torch.relu", __file__, line)
    assert c.code == "return torch.relu(self.out(h) - self.offset).squeeze(-1)"  # no comment
    assert c.site == f"{os.path.relpath(__file__)}:{line}"
    # the relu's input, by hand: the Linear's output minus the offset, every value negative
    with torch.no_grad():
        h = global_mean_pool(model.conv(b.x, b.edge_index).relu(), b.batch)
        before = (model.out(h) - 1000).double()
    assert float(before.max()) < 0
    assert c.evidence.startswith(f"torch.relu at {c.site} (`{c.code}`): input max "
                                 f"{float(before.max()):.4g} across 6 graphs: every input "
                                 "negative, so it outputs 0 for every graph.")
    assert c.op_input_std == pytest.approx(float(before.std(unbiased=False)), rel=1e-6)
    assert "out (Linear(16, 1)), has output std" in c.evidence
    assert "forward code after out" in c.evidence
    assert not any(m.constant for m in trace.modules)


def test_calls_are_the_models_own_in_forward_order_without_pygs_internals():
    trace = signal_trace(_offset_relu(), _batch())
    line = _line_of(OffsetRelu, "# marker: the relu")
    # .relu() on the conv, then - offset and torch.relu; squeeze's input is already constant;
    # global_mean_pool's scatter runs inside PyG and is not the model's call
    assert [(c.op, c.line) for c in trace.calls] == [
        ("Tensor.relu", line - 1), ("Tensor.sub", line), ("torch.relu", line),
        ("Tensor.squeeze", line)]
    assert all(c.file == __file__ for c in trace.calls)
    sub, relu = trace.calls[1], trace.calls[2]
    assert sub.after == "out" and not sub.constant and sub.input_constant is False
    assert relu.constant and relu.zero_fraction == 1.0 and relu.input_max < 0
    assert relu.input_graph_std == pytest.approx(sub.graph_std)
    assert relu.shape == [6, 1] and relu.input_shape == [6, 1] and relu.level == "graph"


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("offset", [-10.0, -1000.0])
def test_a_relu_in_forward_that_keeps_the_signal_is_no_culprit(offset, seed):
    trace = signal_trace(_offset_relu(offset, seed), _batch(seed=seed))
    assert trace.culprit is None and trace.scores_constant is False
    relu = next(c for c in trace.calls if c.op == "torch.relu")
    assert not relu.constant


class Tail(nn.Module):
    """A Linear score head followed by one operation in ``forward``."""

    def __init__(self, tail) -> None:
        super().__init__()
        self.conv = GCNConv(F, H)
        self.out = nn.Linear(H, 1)
        self.tail = tail

    def forward(self, x, edge_index, batch):
        s = self.out(global_mean_pool(self.conv(x, edge_index).relu(), batch))  # (G, 1)
        return self.tail(s)  # marker: the tail


TAILS = {
    "clamp at its lower bound": (lambda s: torch.clamp(s - 1000, min=0.0), "torch.clamp",
                                 "dead_activations", "at or below its lower bound 0"),
    "clamp_min in place": (lambda s: (s - 1000).clamp_min_(0.0), "Tensor.clamp_min_",
                           "dead_activations", "at or below its lower bound 0"),
    "hardtanh at its top": (lambda s: nn.functional.hardtanh(s + 100), "F.hardtanh",
                            "score_head_saturated", "at or above its upper bound 1"),
    "sigmoid of a large input": (lambda s: torch.sigmoid(100 * s + 1000), "torch.sigmoid",
                                 "score_head_saturated", "of its bounds [0, 1]"),
    "tanh method": (lambda s: (s - 1000).tanh(), "Tensor.tanh", "score_head_saturated",
                    "of its bounds [-1, 1]"),
    "F.softmax over one unit": (lambda s: nn.functional.softmax(s, dim=1), "F.softmax",
                                "constant_output_layer", "a softmax over one unit (dim 1"),
    "log_softmax over one unit": (lambda s: s.log_softmax(-1), "Tensor.log_softmax",
                                  "constant_output_layer", "a softmax over one unit"),
    "layer_norm over one unit": (lambda s: nn.functional.layer_norm(s, (1,)), "F.layer_norm",
                                 "constant_output_layer", "a dimension of size 1"),
    "expand of one value": (lambda s: s.mean(0, keepdim=True).expand(s.shape[0], 1),
                            "Tensor.expand", "constant_output_layer",
                            "it broadcasts one value (input shape [1, 1])"),
}


@pytest.mark.parametrize("name", list(TAILS))
def test_the_cause_fits_the_operation(name):
    tail, op, cause, why = TAILS[name]
    torch.manual_seed(0)
    trace = signal_trace(adapt_forward(Tail(tail)), _batch())
    c = trace.culprit
    assert (c.where, c.path, c.op, c.cause) == ("forward", "out", op, cause), c.evidence
    # the call is in the lambda above, not in Tail.forward: the model's code is wherever it is
    assert c.file == __file__ and c.line != _line_of(Tail, "# marker: the tail")
    assert why in c.evidence and c.evidence.startswith(f"{op} at ")


class KilledBetweenModules(nn.Module):
    """The relu that kills the signal sits between two modules: the Linear after it gets the
    same input for every graph, so no module is to blame."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = GCNConv(F, H)
        self.lin1 = nn.Linear(H, H)
        self.lin2 = nn.Linear(H, 1)

    def forward(self, x, edge_index, batch):
        h = global_mean_pool(self.conv(x, edge_index), batch)
        h = torch.relu(self.lin1(h) - 100)  # marker: dies here
        return self.lin2(h).squeeze(-1)


def test_a_call_between_modules_that_kills_the_signal_is_named():
    torch.manual_seed(0)
    trace = signal_trace(adapt_forward(KilledBetweenModules()), _batch())
    c = trace.culprit
    assert _entry(trace, "lin2").constant and _entry(trace, "lin2").input_constant
    assert (c.where, c.path, c.op, c.cause) == ("forward", "lin1", "torch.relu",
                                                "dead_activations")
    assert c.line == _line_of(KilledBetweenModules, "# marker: dies here")


def test_call_culprit_to_dict_and_format_lines_name_the_call():
    trace = signal_trace(_offset_relu(), _batch())
    d = json.loads(json.dumps(trace.to_dict()))
    line = _line_of(OffsetRelu, "# marker: the relu")
    assert {k: d["culprit"][k] for k in ("op", "file", "line")} == {
        "op": "torch.relu", "file": __file__, "line": line}
    assert d["culprit"]["site"].endswith(f"test_trace.py:{line}")
    assert d["culprit"]["code"].startswith("return torch.relu(")
    assert [c["op"] for c in d["calls"]] == [c.op for c in trace.calls]
    assert d["calls"][2]["input_max"] < 0
    last = trace.format_lines()[-1]
    assert f"<- culprit: forward code after out: torch.relu at {trace.culprit.site}" in last


def test_the_call_mode_is_only_active_during_the_traced_forward():
    model = _offset_relu()
    stack = torch._C._len_torch_function_stack()
    signal_trace(model, _batch())
    assert torch._C._len_torch_function_stack() == stack
    assert len(model._forward_pre_hooks) == 1  # adapt_forward's argument adapter alone
    assert len(model._forward_hooks) == 0

    class Raises(OffsetRelu):
        def forward(self, x, edge_index, batch):
            torch.relu(x)
            raise RuntimeError("user bug")

    with pytest.raises(RuntimeError, match="user bug"):
        signal_trace(adapt_forward(Raises()), _batch())
    assert torch._C._len_torch_function_stack() == stack


def test_op_names_say_what_the_code_wrote():
    assert op_name(torch.relu) == "torch.relu"
    assert op_name(torch.nn.functional.softmax) == "F.softmax"
    assert op_name(torch.nn.functional.linear) == "F.linear"
    assert op_name(torch.Tensor.sub) == "Tensor.sub"
    assert op_name(torch.Tensor.expand) == "Tensor.expand"
    assert op_name(torch.Tensor.__rsub__) == "Tensor.__rsub__"
    assert op_name(torch.special.expit) == "torch.special.expit"


# --------------------------------------------------------------------------- identity_call


class TwoRelus(nn.Module):
    """Two ``torch.relu`` calls on two lines, and a ``Tensor.relu`` on the first's line."""

    def __init__(self) -> None:
        super().__init__()
        self.lin1 = nn.Linear(F, H)
        self.lin2 = nn.Linear(H, 1)

    def forward(self, batch):
        h = torch.relu(self.lin1(batch.x) - 1).relu()  # marker: first relu
        s = self.lin2(global_mean_pool(h, batch.batch))
        return torch.relu(s - 1000).squeeze(-1)  # marker: second relu


def _two_relus_by_hand(model: TwoRelus, b: Batch, first: bool, second: bool) -> torch.Tensor:
    h = model.lin1(b.x) - 1
    h = (torch.relu(h) if first else h).relu()
    s = model.lin2(global_mean_pool(h, b.batch)) - 1000
    return (torch.relu(s) if second else s).squeeze(-1)


def test_identity_call_removes_exactly_the_named_call_and_gradients_flow():
    torch.manual_seed(0)
    model, b = TwoRelus(), _batch()
    first, second = (_line_of(TwoRelus, f"# marker: {w} relu") for w in ("first", "second"))
    model_edit(f"identity_call:torch.relu@{__file__}:{second}")(model)
    scores = model(b)
    with torch.no_grad():
        expected = _two_relus_by_hand(model, b, first=True, second=False)
        assert bool((_two_relus_by_hand(model, b, True, True) == 0).all())  # dead before
    assert torch.allclose(scores, expected) and float(scores.detach().std()) > 0
    scores.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    # the other torch.relu, and Tensor.relu on the same line as it, still run
    torch.manual_seed(0)
    other = TwoRelus()
    model_edit(f"identity_call:torch.relu@{__file__}:{first}")(other)
    with torch.no_grad():
        assert torch.allclose(other(b), _two_relus_by_hand(other, b, first=False, second=True))
    assert torch._C._len_torch_function_stack() == 0


def test_identity_call_matches_the_file_and_not_only_the_line():
    torch.manual_seed(0)
    model, b = TwoRelus(), _batch()
    second = _line_of(TwoRelus, "# marker: second relu")
    with torch.no_grad():
        before = model(b)
    model_edit(f"identity_call:torch.relu@/elsewhere/model.py:{second}")(model)
    model_edit(f"identity_call:F.relu@{__file__}:{second}")(model)  # not the function called
    with torch.no_grad():
        assert torch.equal(model(b), before)


def test_identity_call_specs_are_parsed_or_refused_by_name():
    assert parse_identity_call("identity_call:torch.relu@/p/m.py:31") == (
        "torch.relu", "/p/m.py", 31)
    assert parse_identity_call("identity_call:Tensor.sub@C:/p/m.py:7") == (
        "Tensor.sub", "C:/p/m.py", 7)
    with pytest.raises(ValueError, match="identity_call:<op>@<file>:<line>"):
        model_edit("identity_call:torch.relu")


def test_the_traced_call_made_the_identity_gives_scores_that_vary():
    model, b = _offset_relu(), _batch()
    c = signal_trace(model, b).culprit
    model_edit(f"identity_call:{c.op}@{c.file}:{c.line}")(model)
    trace = signal_trace(model, b)
    assert trace.culprit is None and trace.scores_std > 0
    relu = next(call for call in trace.calls if call.op == "torch.relu")  # still called...
    assert not relu.constant and relu.input_max < 0  # ...and its input passes through
