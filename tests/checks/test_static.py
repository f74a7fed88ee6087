"""Static checks: each against a hand-computed oracle, an invariance or a limit case."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn
from torch_geometric.data import Batch, Data
from torch_geometric.loader import DataLoader

from gatrank.checks.static import (
    check_graphs,
    check_loss,
    feature_stats,
    feature_table,
    frozen_parameters,
    gradient_path,
    loss_ratio,
    pair_stats,
    target_scale_sensitivity,
    valid_pairs_per_batch,
    wl_signatures,
)
from gatrank.config import Config
from gatrank.losses import LN2, LossOutput, make_loss_fn, pairwise_rank_loss


def _builtin_loss():
    return make_loss_fn(None, Config())


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


def test_gradient_path_finds_unused_and_detached(make_graphs):
    batch = Batch.from_data_list(make_graphs())
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


def _raw_ic50(n: int = 200, seed: int = 0) -> torch.Tensor:
    """IC50 in nM from pIC50 in [5, 8] with two decimals, as a ChEMBL table gives them."""
    gen = torch.Generator().manual_seed(seed)
    pic50 = torch.round((5 + 3 * torch.rand(n, generator=gen, dtype=torch.float64)) * 100) / 100
    return 10 ** (9 - pic50)


@pytest.mark.parametrize("weight_by_diff", [False, True])
def test_target_scale_sensitivity_pairwise_loss_is_invariant(weight_by_diff):
    """The pairwise loss reads targets through the order of pairs and, with weight_by_diff,
    a weighted *mean* of |y_i - y_j| (the weights' scale cancels): standardizing raw IC50s
    changes neither its value nor its gradient."""
    fn = make_loss_fn(None, Config().updated({"loss.weight_by_diff": weight_by_diff}))
    res = target_scale_sensitivity(fn, _raw_ic50())
    assert res["std"] > 1000 and res["invariant"]
    assert res["loss_raw"] == pytest.approx(res["loss_standardized"], rel=1e-12)
    assert res["grad_norm_raw"] == pytest.approx(res["grad_norm_standardized"], rel=1e-12)


def test_target_scale_sensitivity_flags_mse_and_pairs_weighted_in_target_units():
    y = _raw_ic50()
    mse = make_loss_fn(lambda s, t: ((s - t) ** 2).mean(), Config())
    res = target_scale_sensitivity(mse, y)
    assert not res["invariant"] and res["grad_norm_raw"] > 100 * res["grad_norm_standardized"]
    assert res["loss_change"] > 0.99  # the raw targets' MSE dwarfs the standardized one
    # a loss that standardizes the targets itself is invariant
    own = make_loss_fn(lambda s, t: ((s - (t - t.mean()) / t.std()) ** 2).mean(), Config())
    assert target_scale_sensitivity(own, y)["invariant"]

    def weighted_sum(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Pairs weighted by |y_i - y_j| and summed, not averaged: the weights' scale stays."""
        dy, ds = t[:, None] - t[None, :], s[:, None] - s[None, :]
        return (dy.abs() * torch.nn.functional.softplus(-ds) * (dy > 0)).sum()

    base = torch.randn(50, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    base = (base - base.mean()) / base.std()  # already standardized: an exact oracle
    res = target_scale_sensitivity(make_loss_fn(weighted_sum, Config()), 1000 * base + 5000)
    assert not res["invariant"]
    assert res["grad_norm_raw"] / res["grad_norm_standardized"] == pytest.approx(1000)
    # tie_eps/margin_eps are in target units: which pairs count changes with the scale
    margin = make_loss_fn(None, Config().updated({"loss.margin_eps": 0.5}))
    assert not target_scale_sensitivity(margin, 3 * base + 6)["invariant"]


def test_target_scale_sensitivity_samples_large_sets_and_refuses_nan():
    res = target_scale_sensitivity(make_loss_fn(None, Config()), _raw_ic50(1000))
    assert res["n"] == 256 and res["invariant"]
    with pytest.raises(ValueError, match="1 not finite"):
        target_scale_sensitivity(make_loss_fn(None, Config()), [1.0, float("nan"), 3.0])


def test_pair_stats_matches_brute_force_over_the_real_loader(make_graphs):
    graphs = make_graphs(10)
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


def test_check_graphs_reports_each_problem_with_its_code(make_graphs):
    graphs = make_graphs(4)
    assert check_graphs(graphs) == []
    graphs[1].x[0, 0] = float("nan")
    graphs[2].edge_index = graphs[2].edge_index[:, :0]
    graphs[3].y = torch.tensor([float("inf")])
    codes = sorted(p.code for p in check_graphs(graphs))
    assert codes == ["inf_target", "no_edges", "nonfinite_features"]


def test_check_graphs_gives_the_codes_and_texts_of_a_graph_file(tmp_path, make_graphs):
    from gatrank.data import check_manifest

    graphs = make_graphs(4)
    graphs[0].x[1, 2] = float("inf")
    graphs[1].edge_index = graphs[1].edge_index[:, :0]
    graphs[2].edge_index = torch.tensor([[0, 9], [1, 0]])  # node 9 of 5
    graphs[3].edge_attr = torch.ones(graphs[3].edge_index.shape[1], 2)
    graphs[3].edge_attr[0, 1] = float("nan")
    rows = ["id,y,path"]
    for i, g in enumerate(graphs):
        g.gid = f"g{i}"
        torch.save({"x": g.x, "edge_index": g.edge_index, "edge_attr": g.edge_attr},
                   tmp_path / f"g{i}.pt")
        rows.append(f"g{i},{i},g{i}.pt")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    from_files = {(p.id, p.code, p.problem)
                  for p in check_manifest(tmp_path / "m.csv").problems}
    in_memory = {(p.id, p.code, p.problem) for p in check_graphs(graphs)}
    assert in_memory == from_files
    assert {code for _, code, _ in in_memory} == {
        "nonfinite_features", "no_edges", "edge_index_out_of_range", "nonfinite_edge_features"}


def test_feature_stats_identical_features_and_wl_invariance(make_graphs, path_graph):
    graphs = make_graphs(6)
    for g in graphs:
        g.x = torch.ones_like(g.x)
    same = feature_stats(graphs)
    assert same["identical_nodes"] and same["constant_columns"] == 4
    # every path of 5 nodes with constant features looks alike: all clash (different targets)
    assert same["indistinguishable"] == 1.0 and same["distinct_signatures"] == 1
    # relabelling nodes changes nothing; a different structure is told apart
    g = make_graphs(1, n=5)[0]
    perm = torch.tensor([3, 0, 4, 1, 2])
    inv = torch.argsort(perm)
    relabelled = Data(x=g.x[perm], edge_index=inv[g.edge_index], y=torch.tensor([9.0]))
    assert feature_stats([g, relabelled])["indistinguishable"] == 1.0
    star = Data(x=torch.ones(5, 4), edge_index=torch.tensor([[0, 0, 0, 0, 1, 2, 3, 4],
                                                             [1, 2, 3, 4, 0, 0, 0, 0]]),
                y=torch.tensor([1.0]))
    path = path_graph(5, torch.ones(5, 4), 2.0)
    assert feature_stats([star, path])["indistinguishable"] == 0.0


def test_loss_ratio_of_a_constant_model_is_one():
    s = torch.zeros(6)
    assert loss_ratio(float(pairwise_rank_loss(s, torch.arange(6.0)).loss)) == pytest.approx(1.0)




def test_wl_signatures_ignore_edge_features_and_follow_edge_direction(make_graphs):
    g = make_graphs(1)[0]
    a = g.clone()
    a.edge_attr = torch.zeros(g.edge_index.shape[1], 2)
    b = g.clone()
    b.edge_attr = torch.ones(g.edge_index.shape[1], 2)  # the GAT never reads edge_attr
    other = make_graphs(2, seed=1)[1]
    sig = wl_signatures([a, b, other])
    assert sig[0] == sig[1] and sig[0] != sig[2]
    x = torch.ones(3, 1)
    into_0 = Data(x=x, edge_index=torch.tensor([[1, 2], [0, 0]]))  # a node hearing two
    out_of_0 = Data(x=x, edge_index=torch.tensor([[0, 0], [1, 2]]))  # two nodes hearing one
    s = wl_signatures([into_0, out_of_0, into_0.clone()])
    assert s[0] != s[1] and s[0] == s[2]


def test_wl_signatures_count_edge_features_for_a_model_that_reads_them(make_graphs):
    g = make_graphs(1, n=5)[0]
    e = g.edge_index.shape[1]
    a, b, c = g.clone(), g.clone(), g.clone()
    a.edge_attr = torch.zeros(e, 2)
    b.edge_attr = torch.zeros(e, 2)
    b.edge_attr[0, 1] = 1.0  # one bond of another type
    c.edge_attr = torch.zeros(e, 2)
    perm = torch.tensor([3, 0, 4, 1, 2])  # the same graph as a, nodes and edges relabelled
    inv = torch.argsort(perm)
    order = torch.randperm(e, generator=torch.Generator().manual_seed(0))
    relabelled = Data(x=g.x[perm], edge_index=inv[g.edge_index][:, order],
                      edge_attr=b.edge_attr[order])
    sig = wl_signatures([a, b, c, relabelled], edge_features=True)
    assert sig[0] != sig[1] and sig[0] == sig[2] and sig[1] == sig[3]
    plain = wl_signatures([a, b, c, relabelled])
    assert len(set(plain.tolist())) == 1
    assert torch.equal(plain, wl_signatures([g, g, g, relabelled]))  # unchanged without them
    for gr, y in zip((a, b), (0.0, 1.0), strict=True):
        gr.y = torch.tensor([y])
    assert feature_stats([a, b])["indistinguishable"] == 1.0
    assert feature_stats([a, b], edge_features=True)["indistinguishable"] == 0.0


def test_feature_table_oracle_and_exact_constant_columns():
    g1 = Data(x=torch.tensor([[0.1, 0.0], [0.1, 2.0]]))
    g2 = Data(x=torch.tensor([[0.1, 4.0]]))
    table = feature_table([g1, g2])
    assert table["constant"].tolist() == [True, False]
    assert table["mean"][1] == pytest.approx(2.0) and table["max"][1] == 4.0
    assert table["nonzero_fraction"][1] == pytest.approx(2 / 3)
    assert table["graph_std"][1] == pytest.approx(1.5)  # graph means 1 and 4
    stats = feature_stats([_with_edges(g1), _with_edges(g2)])
    assert stats["constant_columns"] == int(table["constant"].sum()) == 1


def _with_edges(g: Data) -> Data:
    n = g.x.shape[0]
    return Data(x=g.x, edge_index=torch.zeros(2, 1, dtype=torch.long) if n == 1 else
                torch.tensor([[0, 1], [1, 0]]), y=torch.tensor([float(n)]))


def test_valid_pairs_per_batch_follows_the_loader_and_groups(make_graphs):
    graphs = make_graphs(9)
    for i, g in enumerate(graphs):
        g.idx_ = torch.tensor([i])
    group = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    y = np.arange(9.0)
    counts = valid_pairs_per_batch(y, 4, group=group, seed=3)
    loader = DataLoader(graphs, batch_size=4, shuffle=True,
                        generator=torch.Generator().manual_seed(3))
    oracle = []
    for b in loader:
        members = [(int(g), float(v)) for g, v in zip(group[b.idx_.tolist()], b.y.tolist(),
                                                       strict=True)]
        oracle.append(sum(1 for (ga, a), (gc, c) in itertools.permutations(members, 2)
                          if ga == gc and a > c))
    assert counts.tolist() == oracle and len(counts) == 3  # 4 + 4 + 1
    stats = pair_stats(torch.tensor(y), 4, group=torch.tensor(group), seed=3)
    assert stats["pairs_min"] == counts.min() and stats["pairs_all"] == 9  # 3 per group
