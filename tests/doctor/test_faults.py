"""The fault zoo: every cause is covered, and each fault does what its name says (measured
with the same diagnostics the doctor uses, on small hand-built graph sets)."""

from __future__ import annotations

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
from gatrank.config import Config
from gatrank.data import GraphSet
from gatrank.doctor import CAUSES
from gatrank.doctor.faults import FAULTS, get_fault, inject, list_faults
from gatrank.losses import make_loss_fn
from gatrank.model import build_model
from gatrank.runtime import set_seed

DESIGN_CAUSES = [  # the cause ids of DESIGN.md, in its order
    "nan_or_inf_inputs", "empty_graphs", "constant_targets", "no_valid_pairs",
    "uninformative_features", "loss_detached", "loss_wrong_direction", "frozen_parameters",
    "vanishing_gradients", "exploding_gradients", "learning_rate_too_low",
    "learning_rate_too_high", "dead_activations", "oversmoothing", "score_head_saturated",
    "over_regularized", "no_signal",
]


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
    assert set(DESIGN_CAUSES) <= covered
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
        get_fault("dead_relu_head").model(torch.nn.Linear(2, 1))


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
