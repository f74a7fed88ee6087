"""The fault zoo: every cause is covered, and each fault does what its name says (measured
with the same diagnostics the doctor uses, on small hand-built graph sets; the user models of
:mod:`gatrank.doctor.buggy` built as the doctor builds them, on real batches of the embedded
molecules)."""

from __future__ import annotations

import inspect
import traceback
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch_geometric.data import Batch, Data

from gatrank.checks.probes import (
    activation_stats,
)
from gatrank.checks.static import (
    check_graphs,
    check_loss,
    feature_stats,
    frozen_parameters,
    gradient_path,
)
from gatrank.config import Config, ModelConfig
from gatrank.data import GraphSet
from gatrank.doctor import CAUSES
from gatrank.doctor.buggy import broadcast_mse_loss, mse_loss
from gatrank.doctor.faults import FAULTS, get_fault, inject, list_faults
from gatrank.losses import make_loss_fn
from gatrank.model import ScoreShapeError, adapt_forward, build_model, check_scores
from gatrank.plugins import load_object
from gatrank.runtime import set_seed

DESIGN_CAUSES = [  # the cause ids of DESIGN.md, in its order
    "nan_or_inf_inputs", "empty_graphs", "constant_targets", "no_valid_pairs",
    "uninformative_features", "loss_detached", "loss_wrong_direction", "frozen_parameters",
    "vanishing_gradients", "exploding_gradients", "learning_rate_too_low",
    "learning_rate_too_high", "dead_activations", "oversmoothing", "score_head_saturated",
    "over_regularized", "no_signal", "insufficient_capacity", "score_shape_mismatch",
    "constant_output_layer", "bad_initialization", "unscaled_targets", "user_code_error",
]
NEW_CAUSES = DESIGN_CAUSES[-5:]  # the causes of the doctor on real bugs (issue 11)
# insufficient_capacity compares a user's model with gatrank's GAT on the same graphs: a
# property of a model, not a bug to inject (tests/doctor/test_run.py proves it on one).
WITHOUT_FAULT = {"insufficient_capacity"}


def _graph_set(k: int = 16, seed: int = 0) -> GraphSet:
    gen = torch.Generator().manual_seed(seed)
    graphs = []
    for i in range(k):
        n = 4 + i % 3
        src = torch.arange(n - 1)
        ei = torch.cat([torch.stack([src, src + 1]), torch.stack([src + 1, src])], 1)
        graphs.append(Data(x=torch.randn(n, 5, generator=gen), edge_index=ei,
                           y=torch.tensor([float(i)]), group=torch.tensor([-1]),
                           idx=torch.tensor([i]), gid=f"g{i}", smiles=""))
    table = pd.DataFrame({"id": [f"g{i}" for i in range(k)], "y": [float(i) for i in range(k)],
                          "split": None, "group": None})
    return GraphSet(graphs, table, 5, Path("manifest.csv"))


def _model(fault_name: str, cfg: Config):
    inj = inject(fault_name, _graph_set(), cfg)
    set_seed(0)
    net = build_model(5, inj.config.model)
    return inj.model_edit(net) if inj.model_edit else net, inj


def test_every_design_cause_has_a_fault_and_a_fix():
    assert list(CAUSES)[: len(DESIGN_CAUSES)] == DESIGN_CAUSES
    covered = {f.cause for f in FAULTS.values()}
    assert set(DESIGN_CAUSES) - WITHOUT_FAULT <= covered
    assert set(DESIGN_CAUSES) <= set(CAUSES)
    assert all(CAUSES[c]["fix"] for c in covered)
    assert {f["name"] for f in list_faults()} == set(FAULTS)


def test_unknown_fault_names_the_known_ones():
    with pytest.raises(ValueError, match="shuffled_labels"):
        get_fault("no_such_fault")


def test_data_faults_leave_the_input_untouched():
    gs = _graph_set()
    before = [(g.x.clone(), g.edge_index.clone(), g.y.clone()) for g in gs.graphs]
    y_before = gs.table["y"].tolist()
    for fault in FAULTS.values():
        if fault.data is not None:
            inject(fault, gs, Config())
    for g, (x, ei, y) in zip(gs.graphs, before, strict=True):
        assert torch.equal(g.x, x) and torch.equal(g.edge_index, ei) and torch.equal(g.y, y)
    assert gs.table["y"].tolist() == y_before


def test_data_faults_break_what_they_say():
    gs = _graph_set(16)
    codes = {p.code for p in check_graphs(inject("nan_features", gs, Config()).graphs.graphs)}
    assert codes == {"nonfinite_features"}
    assert len(check_graphs(inject("nan_features", gs, Config()).graphs.graphs)) == 2  # 1 in 8
    assert {p.code for p in check_graphs(inject("empty_graphs", gs, Config()).graphs.graphs)} \
        == {"no_edges"}
    const = inject("constant_targets", gs, Config()).graphs
    assert np.ptp(const.table["y"]) == 0
    assert len({float(g.y) for g in const.graphs}) == 1
    shuffled = inject("shuffled_labels", gs, Config(), seed=3).graphs
    ys = [float(g.y) for g in shuffled.graphs]
    assert sorted(ys) == sorted(gs.table["y"]) and ys != gs.table["y"].tolist()
    assert ys == shuffled.table["y"].tolist()  # graphs and table agree
    same = inject("identical_features", gs, Config()).graphs
    assert feature_stats(same.graphs)["identical_nodes"]
    single = inject("singleton_groups", gs, Config())
    assert len({int(g.group) for g in single.graphs.graphs}) == len(gs)
    assert single.config.training.batch_size == 2


def test_config_faults_change_the_named_keys():
    gs = _graph_set()
    cfg = inject("tie_eps_too_large", gs, Config()).config
    assert cfg.loss.tie_eps > np.ptp(gs.table["y"])
    assert inject("lr_too_high", gs, Config()).config.training.learning_rate == 10.0
    assert inject("lr_too_low", gs, Config()).config.training.learning_rate == 1e-7
    reg = inject("heavy_regularization", gs, Config()).config
    assert reg.model.dropout == 0.9 and reg.training.weight_decay == 1.0
    deep = inject("deep_gat_no_residual", gs, Config()).config.model
    assert deep.num_layers == 32 and not deep.residual
    assert inject("huge_temperature", gs, Config()).config.loss.temperature == 1e4


def test_model_faults_show_in_the_measurements():
    batch = Batch.from_data_list(_graph_set().graphs)
    dead, _ = _model("dead_relu_head", Config())
    assert activation_stats(dead, batch)["dead_fraction"] == 1.0
    sat, _ = _model("saturated_sigmoid_head", Config())
    assert activation_stats(sat, batch)["saturated_fraction"] == 1.0
    frozen, _ = _model("frozen_parameters", Config())
    assert 0 < frozen_parameters(frozen)["trainable_fraction"] < 1e-3
    healthy = build_model(5, Config().model)
    huge, inj = _model("exploding_init", Config())
    loss = make_loss_fn(None, inj.config)
    assert gradient_path(huge, loss, batch)["grad_norm"] > 1e3 * max(
        1.0, gradient_path(healthy, loss, batch)["grad_norm"])


def test_model_faults_name_the_missing_score_head():
    with pytest.raises(TypeError, match="score_head"):
        get_fault("dead_relu_head").model_edit(torch.nn.Linear(2, 1))


def test_loss_faults_fail_the_runbook_loss_tests():
    gs = _graph_set()
    for name, broken in (("detached_loss", "has_gradient"),
                         ("reversed_loss", "prefers_correct_order")):
        inj = inject(name, gs, Config())
        res = check_loss(make_loss_fn(inj.loss, inj.config))
        assert not res[broken], name
    assert check_loss(make_loss_fn(None, Config()))["has_gradient"]


def test_loss_faults_wrap_a_user_loss_given_by_import_string():
    inj = inject("reversed_loss", _graph_set(), Config(), loss="custom_plugins:hinge_loss")
    assert not check_loss(make_loss_fn(inj.loss, inj.config))["prefers_correct_order"]


# --------------------------------------------------------------------------- user code


def _user_model(name: str, in_channels: int, **kwargs) -> torch.nn.Module:
    """A model of gatrank.doctor.buggy built as the doctor builds a user's (by import string,
    constructor arguments filled in by name, forward adapted), seeded."""
    set_seed(0)
    return adapt_forward(build_model(in_channels, ModelConfig(kwargs=kwargs),
                                     f"gatrank.doctor.buggy:{name}"))


def _real_batch(zoo_set, k: int = 16) -> Batch:
    return Batch.from_data_list([zoo_set[i] for i in range(k)])


def _input_spread(model: torch.nn.Module, path: str, batch: Batch) -> float:
    """The largest std across graphs of the input of submodule ``path`` ([G, F])."""
    seen = []
    handle = model.get_submodule(path).register_forward_hook(
        lambda m, args, out: seen.append(args[0].detach()))
    try:
        with torch.no_grad():
            model(batch)
    finally:
        handle.remove()
    return float(seen[0].std(dim=0).max())


def test_user_code_faults_name_importable_user_code_and_what_they_put_where():
    gs = _graph_set()
    for fault in FAULTS.values():
        inj = inject(fault, gs, Config(), loss="custom_plugins:hinge_loss")
        assert inj.model == fault.model
        if fault.user_loss:
            assert inj.loss == fault.user_loss  # the fault's loss replaces the user's
        for spec in (fault.model, fault.user_loss):
            if spec:
                assert spec.startswith("gatrank.doctor.buggy:") and callable(load_object(spec))
        if fault.cause in NEW_CAUSES:
            assert fault.evidence, f"{fault.name}: a new-cause fault says what it put where"
    listed = {f["name"]: f for f in list_faults()}
    assert listed["layernorm_one_head"]["user_code"] == "gatrank.doctor.buggy:LayerNormScoreHead"
    assert listed["nan_features"]["user_code"] == ""


def test_evidence_names_modules_and_parameters_the_models_have(zoo_set):
    for name in ("layernorm_one_head", "softmax_one_unit", "zero_init"):
        fault = FAULTS[name]
        model = _user_model(fault.model.split(":")[1], zoo_set.num_features)
        names = dict(model.named_modules()) | dict(model.named_parameters())
        assert fault.evidence[0] in names, (name, fault.evidence)


def test_layernorm_one_head_scores_every_graph_exactly_zero(zoo_set):
    model = _user_model("LayerNormScoreHead", zoo_set.num_features)
    batch = _real_batch(zoo_set)
    assert isinstance(model.get_submodule("head.3"), torch.nn.LayerNorm)
    assert tuple(model.get_submodule("head.3").normalized_shape) == (1,)
    with torch.no_grad():
        scores = check_scores(model(batch), batch)
    assert scores.shape == (16,) and bool((scores == 0).all())
    assert _input_spread(model, "head.3", batch) > 1e-4  # the signal dies in head.3 itself


def _assert_flat_after_lin_out(model: torch.nn.Module, batch: Batch, value: float) -> None:
    """Every score is ``value`` while lin_out's input still varies, and no gradient reaches a
    parameter: what the model's forward code after lin_out does."""
    scores = check_scores(model(batch), batch)
    assert bool((scores == value).all())
    assert _input_spread(model, "lin_out", batch) > 1e-4  # lin_out's input still varies
    make_loss_fn(None, Config())(scores, batch.y, None).loss.backward()
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())  # no gradient


def test_softmax_one_unit_scores_every_graph_exactly_one(zoo_set):
    model = _user_model("SoftmaxScoreGNN", zoo_set.num_features)
    _assert_flat_after_lin_out(model, _real_batch(zoo_set), 1.0)


def test_relu_after_offset_scores_every_graph_zero_while_every_module_varies(zoo_set):
    from gatrank.doctor.buggy import OffsetReluHead
    from gatrank.doctor.trace import signal_trace

    model = _user_model("OffsetReluHead", zoo_set.num_features)
    batch = _real_batch(zoo_set)
    _assert_flat_after_lin_out(model, batch, 0.0)
    # no module is dead: the relu is a call in forward, where the fault's evidence looks
    trace = signal_trace(model, batch)
    assert not any(m.constant for m in trace.modules)
    c = trace.culprit
    assert (c.op, c.cause, c.path) == ("torch.relu", "dead_activations", "lin_out")
    assert c.file == inspect.getsourcefile(OffsetReluHead) and "- 1000" in c.code
    assert all(s in trace.culprit.evidence for s in FAULTS["relu_after_offset"].evidence)


def test_zero_init_zeroes_every_weight_and_every_graph_looks_the_same(zoo_set):
    model = _user_model("ZeroInitGNN", zoo_set.num_features)
    weights = {n: p for n, p in model.named_parameters() if n.endswith("weight")}
    assert "conv1.lin.weight" in weights and len(weights) == 4
    assert all(not p.any() for p in weights.values())
    assert any(p.any() for n, p in model.named_parameters() if n.endswith("bias"))
    batch = _real_batch(zoo_set)
    with torch.no_grad():
        scores = check_scores(model(batch), batch)
    assert len(set(scores.tolist())) == 1


def test_pool_without_batch_returns_one_score_for_a_batch(zoo_set):
    model = _user_model("PoolWithoutBatch", zoo_set.num_features)
    batch = _real_batch(zoo_set)
    with torch.no_grad():
        out = model(batch)
        alone = model(Batch.from_data_list([zoo_set[0]]))
    assert out.shape == (1,) and batch.num_graphs == 16
    assert alone.shape == (1,)  # a single graph is fine: the tutorial's case
    with pytest.raises(ScoreShapeError, match="whole batch"):
        check_scores(out, batch, model=model)


def test_node_scorer_returns_one_score_per_node(zoo_set):
    model = _user_model("NodeScorer", zoo_set.num_features)
    batch = _real_batch(zoo_set)
    with torch.no_grad():
        out = model(batch)
    assert out.shape == (batch.num_nodes,) and batch.num_nodes > batch.num_graphs
    with pytest.raises(ScoreShapeError, match="per node"):
        check_scores(out, batch, model=model)


def test_broadcast_mse_loss_cannot_tell_which_score_goes_with_which_target():
    gen = torch.Generator().manual_seed(0)
    scores, targets = torch.randn(12, generator=gen), torch.randn(12, generator=gen)
    perm = torch.randperm(12, generator=gen)
    with pytest.warns(UserWarning, match="broadcasting"):
        value = broadcast_mse_loss(scores, targets)
        permuted = broadcast_mse_loss(scores[perm], targets)
    assert torch.allclose(value, permuted)
    pairs = ((scores[:, None] - targets[None, :]) ** 2).mean()  # oracle: every (i, j) pair
    assert torch.allclose(value, pairs)
    assert torch.allclose(mse_loss(scores, targets), ((scores - targets) ** 2).mean())
    assert not torch.allclose(mse_loss(scores, targets), mse_loss(scores[perm], targets))


def test_raw_unit_targets_are_ic50_in_nm_under_a_plain_mse(zoo_set):
    inj = inject("raw_unit_targets", zoo_set, Config())
    y = inj.graphs.table["y"].to_numpy()
    pic50 = zoo_set.table["y"].to_numpy()
    assert np.allclose(y, 10.0 ** (9.0 - pic50)) and y.std() > 100
    assert np.allclose([float(g.y) for g in inj.graphs.graphs], y, rtol=1e-6)
    assert inj.loss == "gatrank.doctor.buggy:mse_loss"
    assert zoo_set.table["y"].std() < 2  # the input is untouched: pIC50


def _path_graphs(sizes: list[int], f: int = 5) -> Batch:
    graphs = []
    for n in sizes:
        src = torch.arange(n - 1)
        ei = torch.cat([torch.stack([src, src + 1]), torch.stack([src + 1, src])], 1)
        graphs.append(Data(x=torch.randn(n, f), edge_index=ei))
    return Batch.from_data_list(graphs)


def test_positional_gnn_raises_on_graphs_larger_than_its_table_only(zoo_set):
    model = _user_model("PositionalGNN", 5)
    with torch.no_grad():
        assert model(_path_graphs([32, 5, 32])).shape == (3,)  # 32 rows: positions 0-31 fit
        with pytest.raises(IndexError, match="index out of range") as exc:
            model(_path_graphs([5, 33]))
    files = [frame.filename for frame in traceback.extract_tb(exc.tb)]
    assert any(f.endswith("buggy.py") for f in files)  # raised in the user's own forward
    real = _user_model("PositionalGNN", zoo_set.num_features)
    small = [g for g in zoo_set.graphs if g.num_nodes <= 32][:8]
    large = [g for g in zoo_set.graphs if g.num_nodes > 32][:1]
    assert len(small) == 8 and large  # the embedded data has both
    with torch.no_grad():
        assert real(Batch.from_data_list(small)).shape == (8,)
        with pytest.raises(IndexError):
            real(Batch.from_data_list(small + large))
