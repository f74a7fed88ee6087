"""Metrics against scipy and against their O(N^2) definitions; the per-epoch model measurements
(gradient norms, embedding spread) against torch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch_geometric.data import Batch

from gatrank.config import ModelConfig
from gatrank.metrics import (
    bootstrap_intervals,
    embedding_stats,
    grad_norms,
    grouped_metrics,
    kendall,
    layer_name,
    ndcg_at_k,
    paired_bootstrap,
    pairwise_accuracy,
    ranking_metrics,
    score_stats,
    spearman,
)
from gatrank.model import GATRanker


def _pairwise_definition(s, y, tie_eps):
    dy = y[:, None] - y[None, :]
    ds = s[:, None] - s[None, :]
    counted = dy > tie_eps
    total = counted.sum()
    if total == 0:
        return 0.5
    return (((ds > 0) & counted).sum() + 0.5 * ((ds == 0) & counted).sum()) / total


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64, 2000])
@pytest.mark.parametrize("tie_eps", [0.0, 1e-6, 0.7])
def test_pairwise_accuracy_matches_quadratic_definition_with_ties(n, tie_eps):
    rng = np.random.default_rng(n)
    y = rng.integers(0, 6, n).astype(float) * 0.5  # many target ties
    s = rng.integers(0, 9, n).astype(float)  # many score ties
    assert pairwise_accuracy(s, y, tie_eps=tie_eps) == pytest.approx(
        _pairwise_definition(s, y, tie_eps), abs=1e-12
    )


def test_pairwise_accuracy_extremes():
    y = np.arange(20.0)
    assert pairwise_accuracy(y, y) == 1.0
    assert pairwise_accuracy(-y, y) == 0.0
    assert pairwise_accuracy(np.zeros(20), y) == 0.5  # a collapsed model is at chance
    assert pairwise_accuracy(np.arange(3.0), np.ones(3)) == 0.5  # nothing to rank


def test_pairwise_accuracy_is_scale_invariant():
    rng = np.random.default_rng(0)
    s, y = rng.normal(size=50), rng.normal(size=50)
    assert pairwise_accuracy(s, y) == pairwise_accuracy(3 * s + 1, y)


def test_spearman_and_kendall_match_scipy():
    rng = np.random.default_rng(1)
    s, y = rng.normal(size=100), rng.normal(size=100)
    y[:10] = y[10]  # ties
    assert spearman(s, y) == pytest.approx(stats.spearmanr(s, y).statistic)
    assert kendall(s, y) == pytest.approx(stats.kendalltau(s, y).statistic)


def test_constant_scores_give_zero_correlation_not_nan():
    y = np.arange(5.0)
    assert spearman(np.ones(5), y) == 0.0
    assert kendall(np.ones(5), y) == 0.0


def test_ndcg_perfect_reversed_and_bounds():
    y = np.array([3.0, 1.0, 4.0, 1.5, 9.0, 2.0])
    assert ndcg_at_k(y, y, k=3) == pytest.approx(1.0)
    worst = ndcg_at_k(-y, y, k=3)
    assert 0.0 <= worst < 1.0
    rng = np.random.default_rng(0)
    for _ in range(20):
        v = ndcg_at_k(rng.normal(size=6), y, k=4)
        assert worst - 1e-12 <= v <= 1.0 + 1e-12


def test_ndcg_hand_computed():
    y = np.array([0.0, 1.0, 2.0])  # gains = y - min = y
    s = np.array([0.0, 2.0, 1.0])  # ranks item1 (gain 1) first, then item2 (gain 2)
    dcg = 1 / np.log2(2) + 2 / np.log2(3)
    idcg = 2 / np.log2(2) + 1 / np.log2(3)
    assert ndcg_at_k(s, y, k=2) == pytest.approx(dcg / idcg)


def test_ndcg_of_tied_scores_does_not_depend_on_the_row_order():
    # a constant model on data sorted by target: breaking ties by input order would give it
    # a perfect NDCG (it once did); tied items share their mean gain whichever way rows lie
    y = np.linspace(0.0, 9.0, 50)
    const = np.zeros(50)
    up, down = ndcg_at_k(const, y, k=10), ndcg_at_k(const, y[::-1], k=10)
    assert up == pytest.approx(down, abs=1e-12)
    # every position gets the mean gain: DCG = mean(gain) * sum of the k discounts
    disc = 1 / np.log2(np.arange(2, 12))
    ideal = np.sort(y)[::-1][:10]
    assert up == pytest.approx(y.mean() * disc.sum() / (ideal * disc).sum())
    assert up < 0.6


def test_ndcg_ties_hand_computed():
    y = np.array([0.0, 3.0, 1.0, 2.0])  # gains = y
    s = np.array([5.0, 5.0, 1.0, 0.0])  # items 0 and 1 tie at the top: mean gain 1.5 each
    dcg = 1.5 * (1 / np.log2(2) + 1 / np.log2(3)) + 1 / np.log2(4)
    idcg = 3 / np.log2(2) + 2 / np.log2(3) + 1 / np.log2(4)
    assert ndcg_at_k(s, y, k=3) == pytest.approx(dcg / idcg)
    # a tie group cut by k counts only its positions inside the top k
    assert ndcg_at_k(s, y, k=1) == pytest.approx(1.5 / 3.0)


@pytest.mark.parametrize("seed", range(6))
def test_ndcg_equals_scikit_learns_ndcg_score_with_ties(seed):
    from sklearn.metrics import ndcg_score

    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 60))
    y = rng.integers(0, 6, size=n).astype(float) + (rng.normal(size=n) if seed % 2 else 0)
    s = rng.integers(0, 4, size=n).astype(float)  # heavy score ties
    for k in (1, 3, 10, n):
        assert ndcg_at_k(s, y, k=k) == pytest.approx(
            ndcg_score([y - y.min()], [s], k=k), abs=1e-12)
    const = np.zeros(n)
    order = np.argsort(y)
    assert ndcg_at_k(const, y[order], k=10) == pytest.approx(
        ndcg_at_k(const, y[order[::-1]], k=10), abs=1e-12)
    assert ndcg_at_k(const, y[order], k=10) == pytest.approx(
        ndcg_score([y[order] - y.min()], [const], k=10), abs=1e-12)


def test_ndcg_without_ties_is_unchanged_by_the_tie_averaging():
    rng = np.random.default_rng(3)
    y, s = rng.normal(size=40), rng.normal(size=40)
    gains, top = y - y.min(), np.argsort(-s)[:7]
    disc = 1 / np.log2(np.arange(2, 9))
    assert ndcg_at_k(s, y, k=7) == pytest.approx(
        (gains[top] * disc).sum() / (np.sort(gains)[::-1][:7] * disc).sum())


def test_paired_bootstrap_separates_a_real_lead_from_noise():
    rng = np.random.default_rng(0)
    y = rng.normal(size=300)
    good = y + 0.3 * rng.normal(size=300)
    bad = y + 3.0 * rng.normal(size=300)
    lead = paired_bootstrap(good, bad, y, n_boot=500)
    assert lead["better"] and not lead["worse"] and lead["low"] > 0
    assert lead["difference"] == pytest.approx(spearman(good, y) - spearman(bad, y))
    assert lead["low"] < lead["difference"] < lead["high"]
    assert paired_bootstrap(bad, good, y, n_boot=500)["worse"]
    # two models of the same quality: the interval covers 0
    twin = y + 0.3 * rng.normal(size=300)
    tie = paired_bootstrap(good, twin, y, n_boot=500)
    assert tie["low"] < 0 < tie["high"] and not tie["better"] and not tie["worse"]


def test_paired_bootstrap_rows_are_scipy_spearman_and_a_constant_model_is_zero():
    from gatrank.metrics import _row_spearman

    rng = np.random.default_rng(1)
    s, y = rng.integers(0, 5, size=(4, 30)).astype(float), rng.normal(size=(4, 30))
    for row, got in zip(range(4), _row_spearman(s, y), strict=True):
        assert got == pytest.approx(stats.spearmanr(s[row], y[row]).statistic)
    assert _row_spearman(np.ones((2, 5)), y[:2, :5]).tolist() == [0.0, 0.0]
    res = paired_bootstrap(y[0], np.zeros(30), y[0], n_boot=200)
    assert res["difference"] == pytest.approx(1.0) and res["better"]


def test_paired_bootstrap_is_seeded_and_checks_its_input():
    rng = np.random.default_rng(2)
    y, a, b = rng.normal(size=(3, 50))
    assert paired_bootstrap(a, b, y, seed=3) == paired_bootstrap(a, b, y, seed=3)
    with pytest.raises(ValueError, match=r"scores_a \(50\), scores_b \(49\)"):
        paired_bootstrap(a, b[:49], y)
    with pytest.raises(ValueError, match="level must be in"):
        paired_bootstrap(a, b, y, level=95)


def test_bootstrap_rows_of_pairwise_accuracy_are_the_metric_on_each_resample(monkeypatch):
    import gatrank.metrics as M

    rng = np.random.default_rng(4)
    # integer scores and targets: score ties and target ties both occur
    s = rng.integers(0, 4, size=(6, 25)).astype(float)
    y = rng.integers(0, 6, size=(6, 25)).astype(float)
    want = [pairwise_accuracy(s[r], y[r], tie_eps=0.5) for r in range(6)]
    assert M._row_pairwise_accuracy(s, y, 0.5).tolist() == pytest.approx(want)
    # the O(n log n) path for long resamples gives the same values
    monkeypatch.setattr(M, "_DENSE_PAIRS_MAX_N", 10)
    assert M._row_pairwise_accuracy(s, y, 0.5).tolist() == pytest.approx(want)
    # a resample of one repeated item has no countable pair: 0.5, as pairwise_accuracy says
    assert M._row_pairwise_accuracy(np.ones((1, 4)), np.ones((1, 4)), 1e-6).tolist() == [0.5]


def test_bootstrap_intervals_cover_the_value_and_narrow_with_more_items():
    rng = np.random.default_rng(5)

    def width(n):
        y = rng.normal(size=n)
        res = bootstrap_intervals({"m": y + rng.normal(size=n), "const": np.zeros(n)}, y,
                                  n_boot=400, seed=1)
        for metric in ("spearman", "pairwise_accuracy"):
            iv = res["m"][metric]
            assert iv["low"] < iv["value"] < iv["high"] and iv["n"] == n
        # a constant model has no spread to resample: exactly 0 and 0.5 on every resample
        assert (res["const"]["spearman"]["low"], res["const"]["spearman"]["high"]) == (0, 0)
        pa = res["const"]["pairwise_accuracy"]
        assert (pa["low"], pa["value"], pa["high"]) == (0.5, 0.5, 0.5)
        return res["m"]["spearman"]["high"] - res["m"]["spearman"]["low"]

    assert width(800) < 0.6 * width(80)


def test_bootstrap_intervals_values_are_the_metrics_and_input_is_checked():
    rng = np.random.default_rng(6)
    y, a = rng.normal(size=(2, 60))
    res = bootstrap_intervals({"a": a}, y, n_boot=100, tie_eps=1e-6)
    assert res["a"]["spearman"]["value"] == pytest.approx(spearman(a, y))
    assert res["a"]["pairwise_accuracy"]["value"] == pytest.approx(pairwise_accuracy(a, y))
    assert res == bootstrap_intervals({"a": a}, y, n_boot=100)
    with pytest.raises(ValueError, match=r"scorer 'b' has 59 scores for 60 targets"):
        bootstrap_intervals({"a": a, "b": a[:59]}, y)
    with pytest.raises(ValueError, match=r"no bootstrap for metric\(s\) \['ndcg@10'\]"):
        bootstrap_intervals({"a": a}, y, metrics=("ndcg@10",))


def test_score_stats_and_bundle():
    s = np.array([1.0, 3.0])
    assert score_stats(s) == {"score_mean": 2.0, "score_std": 1.0}
    m = ranking_metrics(s, np.array([0.0, 1.0]), k=5)
    assert set(m) == {"pairwise_accuracy", "spearman", "kendall", "ndcg@5", "score_mean",
                      "score_std"}


def test_grouped_metrics_only_compare_within_groups():
    y = np.array([0.0, 1.0, 10.0, 11.0])
    s = np.array([0.0, 1.0, -5.0, -4.0])  # right inside groups, wrong across
    g = ["a", "a", "b", "b"]
    res = grouped_metrics(s, y, g)
    assert res["mean"]["pairwise_accuracy"] == 1.0
    assert pairwise_accuracy(s, y) < 1.0
    assert set(res["per_group"]) == {"a", "b"}


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in length"):
        pairwise_accuracy([1, 2], [1, 2, 3])


def test_layer_name_groups_parameters_by_layer():
    assert layer_name("convs.1.att_src") == "convs.1"
    assert layer_name("score_head.0.weight") == "score_head.0"
    assert layer_name("linear.bias") == "linear"


def test_grad_norms_match_torch_total_norm_and_show_gradless_layers(make_graphs):
    model = GATRanker(4, ModelConfig(hidden_dim=8, heads=2, num_layers=2))
    for p in model.convs[0].parameters():
        p.requires_grad_(False)
    model(Batch.from_data_list(make_graphs())).pow(2).sum().backward()
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
