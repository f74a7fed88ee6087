"""In-training probes (and the per-layer measurements of gatrank.metrics they build on): each
against a hand-computed oracle, an invariance or a limit case."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn
from torch_geometric.data import Batch, Data
from torch_geometric.nn import GATConv

from gatrank.checks.probes import (
    ModelProbe,
    UpdateTracker,
    activation_stats,
    attention_entropy,
    dirichlet_energy,
    layer_stats,
    mean_average_distance,
    param_snapshot,
    update_ratios,
)
from gatrank.config import Config, ModelConfig
from gatrank.model import GATRanker, build_model
from gatrank.training import train

# --------------------------------------------------------------------------- existing API


# --------------------------------------------------------------------------- updates


def test_update_ratio_is_the_relative_change_per_layer():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 1))
    before = param_snapshot(model)
    with torch.no_grad():
        model[0].weight.mul_(1.1)
        model[0].bias.mul_(1.1)
    ratios = update_ratios(before, model)
    assert ratios["0"] == pytest.approx(0.1, rel=1e-6)
    assert ratios["1"] == 0.0


def test_update_tracker_measures_since_its_previous_call():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 1))
    track = UpdateTracker()
    first = track(model)
    assert first["update_ratio"] is None and first["update_ratio_per_layer"] == {}
    norm = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).norm()
    assert first["param_norm"] == pytest.approx(float(norm))
    with torch.no_grad():
        model[1].weight.mul_(1.5)
        model[1].bias.mul_(1.5)
    second = track(model)
    assert second["update_ratio_per_layer"] == pytest.approx({"0": 0.0, "1": 0.5})
    assert second["update_ratio"] == pytest.approx(0.25)
    assert track(model)["update_ratio"] == 0.0  # nothing moved since the second call


# --------------------------------------------------------------------------- attention


def test_attention_entropy_is_uniform_when_attention_vectors_are_zero(make_graphs):
    model = GATRanker(4, ModelConfig(hidden_dim=8, heads=2, num_layers=2, dropout=0.0))
    for conv in model.convs:
        with torch.no_grad():
            conv.att_src.zero_()
            conv.att_dst.zero_()
    out = attention_entropy(model, Batch.from_data_list(make_graphs()))
    assert set(out) == {"convs.0", "convs.1"}
    for layer in out.values():
        assert len(layer["ratio"]) == 2
        assert layer["ratio"] == pytest.approx([1.0, 1.0], abs=1e-6)  # float32 alpha


def test_attention_entropy_goes_to_zero_when_one_neighbour_dominates():
    conv_model = GATRanker(1, ModelConfig(hidden_dim=1, heads=1, num_layers=1, dropout=0.0))
    conv: GATConv = conv_model.convs[0]
    with torch.no_grad():
        conv.lin.weight.fill_(1.0)
        conv.att_src.fill_(1000.0)  # the neighbour with the largest feature takes all attention
        conv.att_dst.zero_()
    # star: centre 0 with leaves of features 1..4; every node also attends to itself
    leaves = torch.arange(1, 5)
    ei = torch.cat([torch.stack([leaves, torch.zeros(4, dtype=torch.long)]),
                    torch.stack([torch.zeros(4, dtype=torch.long), leaves])], 1)
    g = Data(x=torch.arange(5, dtype=torch.float).view(-1, 1), edge_index=ei,
             y=torch.tensor([0.0]), group=torch.tensor([-1]))
    ratio = attention_entropy(conv_model, Batch.from_data_list([g]))["convs.0"]["ratio"][0]
    assert 0.0 <= ratio < 1e-3


def test_attention_entropy_leaves_training_mode_and_rng_alone(make_graphs):
    model = GATRanker(4, ModelConfig(hidden_dim=8, heads=2, num_layers=2, dropout=0.5))
    model.train()
    state = torch.get_rng_state()
    attention_entropy(model, Batch.from_data_list(make_graphs()))
    assert model.training
    assert torch.equal(state, torch.get_rng_state())


# --------------------------------------------------------------------------- oversmoothing


def test_dirichlet_energy_limits_and_scale_invariance(make_graphs):
    g = make_graphs(1, n=50, f=8)[0]
    assert dirichlet_energy(torch.ones(50, 8), g.edge_index) == 0.0
    e = dirichlet_energy(g.x, g.edge_index)
    assert e == pytest.approx(dirichlet_energy(7.0 * g.x + 3.0, g.edge_index), rel=1e-6)
    # neighbours as different as random nodes: about 1 for i.i.d. features
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2000, 16, generator=gen)
    ei = torch.randint(0, 2000, (2, 20000), generator=gen)
    assert dirichlet_energy(x, ei) == pytest.approx(1.0, abs=0.05)


def test_mean_average_distance_oracle_and_invariances():
    x = torch.eye(3)  # orthogonal nodes: cosine distance 1 for every pair
    assert mean_average_distance(x) == pytest.approx(1.0)
    assert mean_average_distance(torch.ones(4, 3) * 2.5) == pytest.approx(0.0, abs=1e-12)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(7, 5, generator=gen)
    batch = torch.tensor([0, 0, 0, 1, 1, 1, 1])
    pairs = [(i, j) for i, j in itertools.permutations(range(7), 2) if batch[i] == batch[j]]
    oracle = sum(1 - float(torch.cosine_similarity(x[i], x[j], dim=0)) for i, j in pairs)
    assert mean_average_distance(x, batch) == pytest.approx(oracle / len(pairs), rel=1e-6)
    perm = torch.tensor([2, 0, 1, 5, 3, 6, 4])
    assert mean_average_distance(x[perm], batch) == pytest.approx(
        mean_average_distance(x, batch), rel=1e-6)
    assert mean_average_distance(3 * x, batch) == pytest.approx(
        mean_average_distance(x, batch), rel=1e-6)


def test_layer_stats_sees_identical_graphs_as_one(make_graphs):
    g = make_graphs(1)[0]
    model = GATRanker(4, ModelConfig(hidden_dim=8, heads=2, num_layers=3))
    stats = layer_stats(model, Batch.from_data_list([g, g.clone(), g.clone()]))
    assert list(stats) == ["input", "convs.0", "convs.1", "convs.2"]
    assert all(v["distinct_graphs"] == 0.0 for v in stats.values())
    distinct = layer_stats(model, Batch.from_data_list(make_graphs()))
    assert distinct["input"]["distinct_graphs"] == 1.0


# --------------------------------------------------------------------------- activations


def test_layer_stats_of_a_pyg_model_keep_node_level_attention_layers(make_graphs):
    """AttentiveFP's mol_conv attends from atoms to molecules: one row per graph, not a node
    embedding (it broke the oversmoothing measurements)."""
    graphs = make_graphs(4)
    for g in graphs:
        g.edge_attr = torch.rand(g.edge_index.shape[1], 2, generator=torch.Generator())
    model = build_model(4, ModelConfig(kwargs={"hidden_channels": 8, "num_layers": 2,
                                               "num_timesteps": 2}),
                        "torch_geometric.nn.models:AttentiveFP", edge_dim=2)
    stats = layer_stats(model, Batch.from_data_list(graphs))
    assert list(stats) == ["input", "atom_convs.0"]  # mol_conv: one row per graph
    record = ModelProbe()(model, graphs, torch.device("cpu"))
    assert "atom_convs.0" in record["attention_entropy"] and record["layers"]


def test_dead_units_and_saturation(make_graphs):
    batch = Batch.from_data_list(make_graphs())
    model = GATRanker(4, ModelConfig(hidden_dim=8, heads=2, num_layers=1, head="plain"))
    with torch.no_grad():
        model.score_head[0].bias.fill_(-1e4)
    stats = activation_stats(model, batch)
    assert stats["dead_fraction"] == 1.0
    assert stats["saturated_fraction"] is None
    with torch.no_grad():
        model.score_head[0].bias.fill_(1e4)
    assert activation_stats(model, batch)["dead_fraction"] == 0.0
    sig = GATRanker(4, ModelConfig(hidden_dim=8, heads=2, num_layers=1, head="sigmoid"))
    with torch.no_grad():
        sig.score_head[-2].bias.fill_(50.0)
    stats = activation_stats(sig, batch)
    assert stats["saturated_fraction"] == 1.0
    assert stats["preactivation_abs"]["score_head.4"] > 40


# --------------------------------------------------------------------------- probe


def test_probe_in_training_is_deterministic_and_measures_every_record(make_graphs):
    import pandas as pd

    from gatrank.data import GraphSet

    graphs = make_graphs(8)
    table = pd.DataFrame({"id": [str(i) for i in range(8)], "y": [float(i) for i in range(8)],
                          "split": None, "group": None})
    gs = GraphSet(graphs, table, 4, None)
    cfg = Config().updated({"training.epochs": 4, "training.log_every": 2,
                            "model.hidden_dim": 8, "model.heads": 2})
    splits = {"train": list(range(8)), "val": [], "test": []}
    runs = [train(cfg, graphs=gs, progress=False, splits=splits, probes=[ModelProbe()])
            for _ in range(2)]
    h1, h2 = runs[0].history, runs[1].history
    assert [r["epoch"] for r in h1] == [1, 2, 4]
    for r in h1:
        assert set(r["attention_entropy"]) == {"convs.0", "convs.1", "convs.2"}
        assert 0.0 <= min(r["attention_entropy"].values()) <= 1.0 + 1e-9
        assert set(r["layers"]) == {"input", "convs.0", "convs.1", "convs.2"}
    assert h1[0]["update_ratio"] is None and h1[1]["update_ratio"] > 0
    assert [r["loss"] for r in h1] == [r["loss"] for r in h2]
    assert [r["dead_fraction"] for r in h1] == [r["dead_fraction"] for r in h2]
