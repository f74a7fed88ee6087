"""Ranking metrics: pairwise accuracy, Spearman, Kendall, NDCG@k, score statistics.

Conventions:
- Inputs are 1-D arrays (NumPy or torch) of equal length: ``scores`` and ``targets``.
- A pair (i, j) counts for pairwise accuracy when ``|y_i - y_j| > tie_eps``; it is correct when
  the higher target has the higher score; tied scores count one half. So a constant model
  scores exactly 0.5 and a perfect one 1.0.
- Spearman and Kendall are undefined when either side is constant; they are reported as 0.0
  (a constant prediction carries no ranking information) so histories stay JSON-clean.

Also the two model measurements every logged training epoch records, so that training and the
checks read them from one place: gradient norms per layer (:func:`grad_norms`, layers named by
:func:`layer_name`) and the spread of pooled graph embeddings (:func:`embedding_stats`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from scipy import stats
from torch import nn

__all__ = [
    "pairwise_accuracy",
    "spearman",
    "kendall",
    "ndcg_at_k",
    "score_stats",
    "ranking_metrics",
    "grouped_metrics",
    "paired_bootstrap",
    "bootstrap_intervals",
    "layer_name",
    "grad_norms",
    "embedding_stats",
]


def _np(a: Any) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=np.float64).reshape(-1)


def _pair_counts(s: np.ndarray, y: np.ndarray, tie_eps: float) -> tuple[float, int]:
    """(correct pairs + half the score ties, number of counted pairs), in O(N log N).

    Each counted pair is taken once as (hi, lo) with ``y_hi - y_lo > tie_eps``. After sorting by
    target, the "lo" items of each "hi" item form a prefix of the sorted order, so the count is a
    2-D dominance count: for each i, the items j < prefix_end[i] with a lower (or equal) score.
    """
    order = np.argsort(y, kind="stable")
    y_sorted, s_sorted = y[order], s[order]
    # y_i - y_j > tie_eps  <=>  y_j < y_i - tie_eps; searchsorted(left) counts the y_j < v.
    prefix_end = np.searchsorted(y_sorted, y_sorted - tie_eps, side="left")
    total = int(prefix_end.sum())
    if total == 0:
        return 0.0, 0
    _, s_rank = np.unique(s_sorted, return_inverse=True)
    less, leq = _dominance_counts(s_rank.reshape(-1), prefix_end)
    return float(less.sum() + 0.5 * (leq - less).sum()), total


def _dominance_counts(ranks: np.ndarray, prefix_end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each i: ``#{j < prefix_end[i] : ranks[j] < ranks[i]}`` and the same with ``<=``.

    A wavelet matrix over ``ranks`` (values in ``[0, R)``) answers all N queries together in
    ``ceil(log2 R)`` levels of O(N) vectorized work: at each level, from the top bit down, the
    array is stably partitioned by that bit (zeros first) and every query range ``[lo, hi)`` is
    mapped into the half that holds its own value; when the query's bit is 1, the range's zeros
    (smaller values) are counted first. What is left at the bottom equals the query value.
    """
    n = len(ranks)
    # int32 halves the memory traffic of the gathers that dominate the run time.
    idx = np.int32 if n < 2**31 - 1 else np.int64
    ranks = ranks.astype(idx)
    cur = ranks.copy()
    lo = np.zeros(n, dtype=idx)
    hi = prefix_end.astype(idx)
    less = np.zeros(n, dtype=np.int64)
    zeros_before = np.zeros(n + 1, dtype=idx)
    for level in reversed(range(max(1, int(ranks.max()).bit_length()))):
        is_zero = ((cur >> level) & 1) == 0
        np.cumsum(is_zero, out=zeros_before[1:])
        num_zeros = zeros_before[-1]
        z_lo, z_hi = zeros_before[lo], zeros_before[hi]
        one = ((ranks >> level) & 1) == 1
        less += np.where(one, z_hi - z_lo, 0)
        lo = np.where(one, num_zeros + lo - z_lo, z_lo)
        hi = np.where(one, num_zeros + hi - z_hi, z_hi)
        cur = np.concatenate([cur[is_zero], cur[~is_zero]])
    return less, less + (hi - lo)


def pairwise_accuracy(scores: Any, targets: Any, *, tie_eps: float = 1e-6) -> float:
    """Fraction of target-ordered pairs that the scores order the same way.

    Pairs with ``|y_i - y_j| <= tie_eps`` are skipped; pairs with equal scores count 1/2.
    Returns 0.5 when no pair is countable (nothing to rank).
    """
    s, y = _np(scores), _np(targets)
    if len(s) != len(y):
        raise ValueError(f"scores ({len(s)}) and targets ({len(y)}) differ in length")
    correct, total = _pair_counts(s, y, tie_eps)
    return correct / total if total else 0.5


def _finite_or_zero(v: float) -> float:
    return float(v) if v is not None and math.isfinite(v) else 0.0


def spearman(scores: Any, targets: Any) -> float:
    """Spearman rank correlation (scipy); 0.0 when either side is constant."""
    s, y = _np(scores), _np(targets)
    if len(s) < 2 or np.ptp(s) == 0 or np.ptp(y) == 0:
        return 0.0
    return _finite_or_zero(stats.spearmanr(s, y).statistic)


def kendall(scores: Any, targets: Any) -> float:
    """Kendall's tau-b (scipy, O(N log N)); 0.0 when either side is constant."""
    s, y = _np(scores), _np(targets)
    if len(s) < 2 or np.ptp(s) == 0 or np.ptp(y) == 0:
        return 0.0
    return _finite_or_zero(stats.kendalltau(s, y).statistic)


def ndcg_at_k(scores: Any, targets: Any, k: int = 10) -> float:
    """NDCG@k with gains ``y - min(y)`` (so any real-valued target works).

    Items are ranked by score, descending. Tied scores share their group's mean gain over the
    positions the group spans (scikit-learn's ``ndcg_score``, ``ignore_ties=False``), so the
    value does not depend on the input order: a constant model gets the NDCG of a random
    ordering in expectation, never that of a data set that happens to be sorted by target.
    O(N log N). Returns 1.0 when all gains are zero (nothing to rank) or there are no items.
    """
    s, y = _np(scores), _np(targets)
    if len(s) != len(y):
        raise ValueError(f"scores ({len(s)}) and targets ({len(y)}) differ in length")
    if len(s) == 0:
        return 1.0
    k = min(k, len(s))
    gains = y - y.min()
    discount = np.zeros(len(s))
    discount[:k] = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.sort(gains)[::-1]
    idcg = float((ideal * discount).sum())
    if idcg == 0:
        return 1.0
    return _tie_averaged_dcg(s, gains, discount) / idcg


def _tie_averaged_dcg(s: np.ndarray, gains: np.ndarray, discount: np.ndarray) -> float:
    """DCG of the ranking by ``s`` (descending) where each group of tied scores contributes its
    mean gain times the sum of the discounts at the positions it occupies."""
    _, inv, counts = np.unique(-s, return_inverse=True, return_counts=True)
    mean_gain = np.bincount(inv.reshape(-1), weights=gains, minlength=len(counts)) / counts
    ends = np.cumsum(discount)[np.cumsum(counts) - 1]  # cumulative discount at each group's end
    return float((mean_gain * np.diff(ends, prepend=0.0)).sum())


def score_stats(scores: Any) -> dict[str, float]:
    """Mean and (population) standard deviation of the scores."""
    s = _np(scores)
    if len(s) == 0:
        return {"score_mean": 0.0, "score_std": 0.0}
    return {"score_mean": float(s.mean()), "score_std": float(s.std())}


def ranking_metrics(
    scores: Any, targets: Any, *, tie_eps: float = 1e-6, k: int = 10
) -> dict[str, float]:
    """All metrics at once: pairwise_accuracy, spearman, kendall, ndcg@k, score_mean, score_std."""
    return {
        "pairwise_accuracy": pairwise_accuracy(scores, targets, tie_eps=tie_eps),
        "spearman": spearman(scores, targets),
        "kendall": kendall(scores, targets),
        f"ndcg@{k}": ndcg_at_k(scores, targets, k),
        **score_stats(scores),
    }


def grouped_metrics(
    scores: Any, targets: Any, groups: Sequence[Any], *, tie_eps: float = 1e-6, k: int = 10
) -> dict[str, Any]:
    """Metrics per group and their unweighted mean over groups with at least two members.

    Returns ``{"per_group": {group: metrics}, "mean": metrics}``.
    """
    s, y = _np(scores), _np(targets)
    g = np.asarray(list(groups), dtype=object)
    per_group: dict[str, dict[str, float]] = {}
    for key in dict.fromkeys(g.tolist()):
        idx = np.nonzero(g == key)[0]
        if len(idx) < 2:
            continue
        per_group[str(key)] = ranking_metrics(s[idx], y[idx], tie_eps=tie_eps, k=k)
    mean: dict[str, float] = {}
    if per_group:
        names = next(iter(per_group.values())).keys()
        mean = {n: float(np.mean([m[n] for m in per_group.values()])) for n in names}
    return {"per_group": per_group, "mean": mean}


def _row_spearman(s: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman of each row of ``s`` against the same row of ``y`` (average ranks for ties);
    0.0 for a row where either side is constant, as :func:`spearman` reports it."""
    rs, ry = stats.rankdata(s, axis=1), stats.rankdata(y, axis=1)
    rs -= rs.mean(1, keepdims=True)
    ry -= ry.mean(1, keepdims=True)
    den = np.sqrt((rs * rs).sum(1) * (ry * ry).sum(1))
    num = (rs * ry).sum(1)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 1e-12)


def _resamples(n: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Chunks of bootstrap resamples of ``n`` items (rows of indices drawn with replacement),
    ``n_boot`` rows in all, at most ~2M indices per chunk: the same rows for the same seed."""
    rng = np.random.default_rng(seed)
    chunk = max(1, 2_000_000 // max(n, 1))
    for start in range(0, n_boot, chunk):
        rows = min(chunk, n_boot - start)
        yield rng.integers(n, size=(rows, n)) if n else np.zeros((rows, 0), dtype=np.int64)


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")


def _interval(boots: np.ndarray, level: float, n: int) -> tuple[float, float]:
    if n < 2:
        return 0.0, 0.0
    low, high = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2]).tolist()
    return float(low), float(high)


def paired_bootstrap(scores_a: Any, scores_b: Any, targets: Any, *, n_boot: int = 2000,
                     level: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """Spearman of ``scores_a`` minus Spearman of ``scores_b`` on the same items, with a
    percentile bootstrap interval: the items are resampled with replacement, the same resample
    for both, so what the two have in common (the items' difficulty) cancels.

    Returns ``{"metric", "difference", "low", "high", "level", "n_boot", "n", "better",
    "worse"}``: ``better`` when the interval lies above 0 (a lead larger than the noise),
    ``worse`` when it lies below. Memory ``O(n)`` per chunk of resamples.
    """
    a, b, y = _np(scores_a), _np(scores_b), _np(targets)
    if not len(a) == len(b) == len(y):
        raise ValueError(f"scores_a ({len(a)}), scores_b ({len(b)}) and targets ({len(y)}) "
                         "differ in length")
    _check_level(level)
    n = len(y)
    diff = spearman(a, y) - spearman(b, y)
    boots = np.empty(n_boot)
    done = 0
    for idx in _resamples(n, n_boot, seed):
        yy = y[idx]
        boots[done:done + len(idx)] = _row_spearman(a[idx], yy) - _row_spearman(b[idx], yy)
        done += len(idx)
    low, high = _interval(boots, level, n)
    return {"metric": "spearman", "difference": float(diff), "low": low, "high": high,
            "level": level, "n_boot": n_boot, "n": n, "better": bool(low > 0),
            "worse": bool(high < 0)}


_DENSE_PAIRS_MAX_N = 1_000
"""Up to this many items a resample's pairs are compared all at once (n^2 per resample, in
chunks of ~4M pairs); above it each resample is counted in O(n log n) by :func:`_pair_counts`."""


def _row_pairwise_accuracy(s: np.ndarray, y: np.ndarray, tie_eps: float) -> np.ndarray:
    """:func:`pairwise_accuracy` of each row of ``s`` against the same row of ``y``."""
    rows, n = s.shape
    if n > _DENSE_PAIRS_MAX_N:
        counts = (_pair_counts(a, t, tie_eps) for a, t in zip(s, y, strict=True))
        return np.array([c / t if t else 0.5 for c, t in counts])
    out = np.empty(rows)
    step = max(1, 4_000_000 // max(n * n, 1))
    for k in range(0, rows, step):
        ss, yy = s[k:k + step], y[k:k + step]
        counted = (yy[:, :, None] - yy[:, None, :]) > tie_eps  # [b, hi, lo]
        ds = ss[:, :, None] - ss[:, None, :]
        total = counted.sum((1, 2))
        correct = (counted & (ds > 0)).sum((1, 2)) + 0.5 * (counted & (ds == 0)).sum((1, 2))
        out[k:k + step] = np.divide(correct, total, out=np.full(len(total), 0.5),
                                    where=total > 0)
    return out


_ROW_METRICS = {
    "spearman": lambda s, y, tie_eps: _row_spearman(s, y),
    "pairwise_accuracy": _row_pairwise_accuracy,
}


def bootstrap_intervals(scorers: Mapping[str, Any], targets: Any, *,
                        metrics: Sequence[str] = ("spearman", "pairwise_accuracy"),
                        n_boot: int = 2000, level: float = 0.95, seed: int = 0,
                        tie_eps: float = 1e-6) -> dict[str, dict[str, dict[str, Any]]]:
    """Each scorer's metrics on ``targets`` with a percentile bootstrap interval: the items
    are resampled with replacement, the same resamples for every scorer (so two scorers'
    intervals are comparable; for their difference use :func:`paired_bootstrap`).

    Returns ``{scorer: {metric: {"value", "low", "high", "level", "n_boot", "n"}}}``; the
    ``value`` is the metric on all items, as :func:`ranking_metrics` reports it.
    """
    unknown = [m for m in metrics if m not in _ROW_METRICS]
    if unknown:
        raise ValueError(f"no bootstrap for metric(s) {unknown}; use {sorted(_ROW_METRICS)}")
    _check_level(level)
    y = _np(targets)
    n = len(y)
    arrays = {name: _np(s) for name, s in scorers.items()}
    for name, s in arrays.items():
        if len(s) != n:
            raise ValueError(f"scorer {name!r} has {len(s)} scores for {n} targets")
    boots = {(name, m): np.empty(n_boot) for name in arrays for m in metrics}
    done = 0
    for idx in _resamples(n, n_boot, seed):
        yy = y[idx]
        for name, s in arrays.items():
            for m in metrics:
                boots[name, m][done:done + len(idx)] = _ROW_METRICS[m](s[idx], yy, tie_eps)
        done += len(idx)
    whole = {"spearman": lambda s: spearman(s, y),
             "pairwise_accuracy": lambda s: pairwise_accuracy(s, y, tie_eps=tie_eps)}
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for name, s in arrays.items():
        out[name] = {}
        for m in metrics:
            low, high = _interval(boots[name, m], level, n)
            out[name][m] = {"value": float(whole[m](s)), "low": low, "high": high,
                            "level": level, "n_boot": n_boot, "n": n}
    return out


def layer_name(param_name: str) -> str:
    """Group a parameter name into its layer: ``convs.1.att_src`` → ``convs.1``,
    ``score_head.0.weight`` → ``score_head.0``, ``linear.bias`` → ``linear``."""
    parts = param_name.split(".")
    if len(parts) > 2 and parts[1].isdigit():
        return ".".join(parts[:2])
    return parts[0] if len(parts) > 1 else param_name


def grad_norms(model: nn.Module) -> tuple[float, dict[str, float]]:
    """Total L2 norm of all gradients and the norm per layer (see :func:`layer_name`).

    Parameters without a gradient contribute 0 (they appear with 0.0 so a frozen or detached
    layer is visible rather than missing).
    """
    sq: dict[str, float] = defaultdict(float)
    for name, p in model.named_parameters():
        key = layer_name(name)
        if p.grad is None:
            sq[key] += 0.0
        else:
            sq[key] += float(p.grad.detach().double().pow(2).sum())
    per_layer = {k: math.sqrt(v) for k, v in sq.items()}
    return math.sqrt(sum(sq.values())), per_layer


@torch.no_grad()
def embedding_stats(embeddings: torch.Tensor) -> dict[str, float]:
    """Spread of pooled graph embeddings ``[G, D]`` (the runbook's Step 2C check).

    ``emb_mean``/``emb_std`` are over all entries (what the runbook prints); ``emb_graph_std``
    is the mean over dimensions of the std across graphs: near 0 means every graph gets the
    same embedding, whatever the per-graph spread of its entries.
    """
    e = embeddings.detach().double()
    across = e.std(dim=0, unbiased=False).mean() if e.shape[0] > 1 else e.new_zeros(())
    return {
        "emb_mean": float(e.mean()),
        "emb_std": float(e.std(unbiased=False)),
        "emb_graph_std": float(across),
    }
