"""Diagnostics: each measurement against a hand-computed oracle, an invariance or a limit case."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn
from torch_geometric.data import Batch, Data
from torch_geometric.loader import DataLoader
from torch_geometric.nn import GATConv

from gatrank.checks.probes import (
    ModelProbe,
    activation_stats,
    attention_entropy,
    dirichlet_energy,
    layer_stats,
    mean_average_distance,
    param_snapshot,
    update_ratios,
)
from gatrank.checks.static import (
    check_graphs,
    check_loss,
    feature_stats,
    frozen_parameters,
    gradient_path,
    loss_ratio,
    pair_stats,
)
from gatrank.config import Config, ModelConfig
from gatrank.losses import LN2, LossOutput, make_loss_fn, pairwise_rank_loss
from gatrank.metrics import embedding_stats, grad_norms, layer_name
from gatrank.model import GATRanker
from gatrank.training import train


def _path_graph(n: int, x: torch.Tensor, y: float, group: int = -1) -> Data:
    src = torch.arange(n - 1)
    ei = torch.cat([torch.stack([src, src + 1]), torch.stack([src + 1, src])], 1)
    return Data(x=x, edge_index=ei, y=torch.tensor([y]), group=torch.tensor([group]))


def _graphs(k: int = 6, n: int = 5, f: int = 4, seed: int = 0) -> list[Data]:
    gen = torch.Generator().manual_seed(seed)
    return [_path_graph(n, torch.randn(n, f, generator=gen), float(i)) for i in range(k)]


def _builtin_loss():
    return make_loss_fn(None, Config())


# --------------------------------------------------------------------------- existing API


def test_layer_name_groups_parameters_by_layer():
    assert layer_name("convs.1.att_src") == "convs.1"
    assert layer_name("score_head.0.weight") == "score_head.0"
    assert layer_name("linear.bias") == "linear"


def test_grad_norms_match_torch_total_norm_and_show_gradless_layers():
    model = GATRanker(4, ModelConfig(hidden_dim=8, heads=2, num_layers=2))
    for p in model.convs[0].parameters():
        p.requires_grad_(False)
    model(Batch.from_data_list(_graphs())).pow(2).sum().backward()
    total, per_layer = grad_norms(model)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert total == pytest.approx(float(torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(g) for g in grads]))), rel=1e-5)
    assert per_layer["convs.0"] == 0.0
    assert math.sqrt(sum(v**2 for v in per_layer.values())) == pytest.approx(total, rel=1e-9)


def test_embedding_stats_graph_std_is_zero_for_identical_embeddings():
    same = torch.ones(5, 3) * torch.tensor([1.0, 2.0, 3.0])
    stats = embedding_stats(same)
    assert stats["emb_graph_std"] == 0.0
    assert stats["emb_std"] > 0  # entries differ, graphs do not: the runbook's std alone misses it


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


# --------------------------------------------------------------------------- attention


def test_attention_entropy_is_uniform_when_attention_vectors_are_zero():
    model = GATRanker(4, ModelConfig(hidden_dim=8, heads=2, num_layers=2, dropout=0.0))
    for conv in model.convs:
        with torch.no_grad():
            conv.att_src.zero_()
            conv.att_dst.zero_()
    out = attention_entropy(model, Batch.from_data_list(_graphs()))
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


def test_attention_entropy_leaves_training_mode_and_rng_alone():
    model = GATRanker(4, ModelConfig(hidden_dim=8, heads=2, num_layers=2, dropout=0.5))
    model.train()
    state = torch.get_rng_state()
    attention_entropy(model, Batch.from_data_list(_graphs()))
    assert model.training
    assert torch.equal(state, torch.get_rng_state())


# --------------------------------------------------------------------------- oversmoothing


def test_dirichlet_energy_limits_and_scale_invariance():
    g = _graphs(1, n=50, f=8)[0]
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


def test_layer_stats_sees_identical_graphs_as_one():
    g = _graphs(1)[0]
    model = GATRanker(4, ModelConfig(hidden_dim=8, heads=2, num_layers=3))
    stats = layer_stats(model, Batch.from_data_list([g, g.clone(), g.clone()]))
    assert list(stats) == ["input", "convs.0", "convs.1", "convs.2"]
    assert all(v["distinct_graphs"] == 0.0 for v in stats.values())
    distinct = layer_stats(model, Batch.from_data_list(_graphs()))
    assert distinct["input"]["distinct_graphs"] == 1.0


# --------------------------------------------------------------------------- activations


def test_dead_units_and_saturation():
    batch = Batch.from_data_list(_graphs())
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


# --------------------------------------------------------------------------- static checks


def test_frozen_parameters_counts_by_element():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 1))  # 16 + 5 weights
    model[0].weight.requires_grad_(False)  # 12
    opt = torch.optim.Adam([model[0].bias, model[1].weight])
    out = frozen_parameters(model, opt)
    assert out["frozen"] == ["0.weight"]
    assert out["not_in_optimizer"] == ["1.bias"]
    assert out["trainable_fraction"] == pytest.approx((4 + 4) / 21)


class _HalfUsed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.used = nn.Linear(4, 1)
        self.unused = nn.Linear(4, 1)

    def forward(self, batch):
        from torch_geometric.nn import global_mean_pool

        return self.used(global_mean_pool(batch.x, batch.batch)).squeeze(-1)


def test_gradient_path_finds_unused_and_detached():
    batch = Batch.from_data_list(_graphs())
    res = gradient_path(_HalfUsed(), _builtin_loss(), batch)
    assert set(res["unused"]) == {"unused.weight", "unused.bias"}
    assert "used.weight" in res["connected"]

    def detached(scores, targets, group):
        return LossOutput(pairwise_rank_loss(scores, targets).loss.detach().requires_grad_(), 1)

    res = gradient_path(_HalfUsed(), detached, batch)
    assert res["connected"] == [] and len(res["unused"]) == 4


def test_check_loss_on_the_builtin_and_broken_losses():
    ok = check_loss(_builtin_loss())
    assert ok["prefers_correct_order"] and ok["descent_agrees"] and ok["has_gradient"]
    assert ok["loss_constant"] == pytest.approx(LN2)
    assert ok["finite_large_gaps"]
    builtin = _builtin_loss()
    flipped = check_loss(lambda s, y, g: builtin(-s, y, g))
    assert not flipped["prefers_correct_order"] and not flipped["descent_agrees"]
    detached = check_loss(lambda s, y, g: LossOutput(builtin(s, y, g).loss.detach(), 1))
    assert not detached["requires_grad"] and not detached["has_gradient"]

    def naive(s, y, g):  # log(1 + exp(-ds)) overflows at large gaps
        ds = s[:, None] - s[None, :]
        mask = (y[:, None] - y[None, :]) > 0
        return LossOutput(torch.log(1 + torch.exp(-ds[mask])).mean(), int(mask.sum()))

    assert not check_loss(naive)["finite_large_gaps"]


def test_check_loss_targets_spaced_beyond_tie_eps_keep_the_gradient():
    wide_ties = make_loss_fn(None, Config().updated({"loss.tie_eps": 20.0}))
    assert not check_loss(wide_ties)["has_gradient"]  # targets 0..15: every pair is a tie
    assert check_loss(wide_ties, scale=41.0)["has_gradient"]


def test_pair_stats_matches_brute_force_over_the_real_loader():
    graphs = _graphs(10)
    for i, g in enumerate(graphs):
        g.y = torch.tensor([float(i // 3)])  # ties inside blocks of three
    y = torch.cat([g.y for g in graphs])
    stats = pair_stats(y, 4, tie_eps=1e-6, seed=7)
    loader = DataLoader(graphs, batch_size=4, shuffle=True,
                        generator=torch.Generator().manual_seed(7))
    counts = []
    for b in loader:
        yb = b.y.tolist()
        counts.append(sum(1 for a, c in itertools.permutations(yb, 2) if a - c > 1e-6))
    assert stats["batches"] == len(counts)
    assert stats["pairs_min"] == min(counts)
    assert stats["pairs_mean"] == pytest.approx(sum(counts) / len(counts))
    assert stats["batches_without_pairs"] == sum(c == 0 for c in counts)
    assert stats["pairs_all"] == sum(1 for a, c in itertools.permutations(y.tolist(), 2)
                                     if a - c > 1e-6)


def test_pair_stats_with_groups_of_one_has_no_pairs():
    y = torch.arange(8.0)
    stats = pair_stats(y, 8, group=torch.arange(8))
    assert stats["pairs_all"] == 0 and stats["fraction_without_pairs"] == 1.0


def test_check_graphs_reports_each_problem_with_its_code():
    graphs = _graphs(4)
    assert check_graphs(graphs) == []
    graphs[1].x[0, 0] = float("nan")
    graphs[2].edge_index = graphs[2].edge_index[:, :0]
    graphs[3].y = torch.tensor([float("inf")])
    codes = sorted(p.code for p in check_graphs(graphs))
    assert codes == ["inf_target", "no_edges", "nonfinite_features"]


def test_feature_stats_identical_features_and_wl_invariance():
    graphs = _graphs(6)
    for g in graphs:
        g.x = torch.ones_like(g.x)
    same = feature_stats(graphs)
    assert same["identical_nodes"] and same["constant_columns"] == 4
    # every path of 5 nodes with constant features looks alike: all clash (different targets)
    assert same["indistinguishable"] == 1.0 and same["distinct_signatures"] == 1
    # relabelling nodes changes nothing; a different structure is told apart
    g = _graphs(1, n=5)[0]
    perm = torch.tensor([3, 0, 4, 1, 2])
    inv = torch.argsort(perm)
    relabelled = Data(x=g.x[perm], edge_index=inv[g.edge_index], y=torch.tensor([9.0]))
    assert feature_stats([g, relabelled])["indistinguishable"] == 1.0
    star = Data(x=torch.ones(5, 4), edge_index=torch.tensor([[0, 0, 0, 0, 1, 2, 3, 4],
                                                             [1, 2, 3, 4, 0, 0, 0, 0]]),
                y=torch.tensor([1.0]))
    path = _path_graph(5, torch.ones(5, 4), 2.0)
    assert feature_stats([star, path])["indistinguishable"] == 0.0


def test_loss_ratio_of_a_constant_model_is_one():
    s = torch.zeros(6)
    assert loss_ratio(float(pairwise_rank_loss(s, torch.arange(6.0)).loss)) == pytest.approx(1.0)


# --------------------------------------------------------------------------- probe


def test_probe_in_training_is_deterministic_and_measures_every_record():
    import pandas as pd

    from gatrank.data import GraphSet

    graphs = _graphs(8)
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
