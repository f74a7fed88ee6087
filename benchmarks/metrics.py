"""Evaluation metrics: exact against their O(N^2) definitions, timed at a million items.

Targets: pairwise accuracy and Kendall's tau equal the quadratic definitions at N = 2,000 with
ties (to 1e-12), and each takes under 5 s at N = 1,000,000.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from benchmarks.common import Check, Options, Section, best_time
from benchmarks.references import kendall_tau_b_quadratic, pairwise_accuracy_quadratic
from gatrank.metrics import kendall, ndcg_at_k, pairwise_accuracy, spearman

__all__ = ["run", "exactness"]

logger = logging.getLogger(__name__)

EXACT_N = 2_000
BIG_N = 1_000_000
TIME_TARGET_S = 5.0
EXACT_TOL = 1e-12


def _data(n: int, seed: int, ties: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.normal(size=n)
    s = y + rng.normal(size=n)
    if ties:  # heavy ties on both sides
        y, s = np.round(y, 1), np.round(s, 1)
    return s, y


def exactness(n: int = EXACT_N) -> dict[str, float]:
    """Largest |gatrank - O(N^2) definition| over tie settings, for each metric."""
    worst = {"pairwise_accuracy": 0.0, "kendall": 0.0}
    for seed, ties in ((0, True), (1, False)):
        s, y = _data(n, seed, ties)
        for tie_eps in (0.0, 1e-6, 0.25):
            got = pairwise_accuracy(s, y, tie_eps=tie_eps)
            want = pairwise_accuracy_quadratic(s, y, tie_eps)
            worst["pairwise_accuracy"] = max(worst["pairwise_accuracy"], abs(got - want))
        worst["kendall"] = max(worst["kendall"], abs(kendall(s, y) - kendall_tau_b_quadratic(s, y)))
    return worst


def run(opts: Options) -> Section:
    repeat = 1 if opts.quick else 3
    sec = Section(
        key="metrics",
        title="Evaluation metrics",
        method=(
            f"Exactness: gatrank vs the O(N^2) definitions at N = {EXACT_N:,} with heavy ties "
            "(values rounded to 0.1) and without, tie_eps 0 / 1e-6 / 0.25. Time: best of "
            f"{repeat} at N = {BIG_N:,} (scores = targets + noise; 'tied' rounds both to 0.1). "
            "The O(N^2) definition is timed at a smaller N for the ratio."
        ),
        columns=["metric", "N", "data", "gatrank s", "O(N^2) definition s", "speedup",
                 "max |difference| at N=2,000"],
    )
    worst = exactness()
    slowest = {"pairwise_accuracy": 0.0, "kendall": 0.0}
    quad_n = 5_000 if opts.quick else 20_000
    s_q, y_q = _data(quad_n, 3, ties=False)
    quad = {
        "pairwise_accuracy": (lambda: pairwise_accuracy_quadratic(s_q, y_q, 1e-6),
                              lambda: pairwise_accuracy(s_q, y_q)),
        "kendall": (lambda: kendall_tau_b_quadratic(s_q, y_q), lambda: kendall(s_q, y_q)),
    }
    for name, (slow, fast) in quad.items():
        t_slow, t_fast = best_time(slow, 1, warmup=0), best_time(fast, 3)
        sec.rows.append({"metric": name, "N": quad_n, "data": "continuous", "gatrank s": t_fast,
                         "O(N^2) definition s": t_slow, "speedup": t_slow / t_fast,
                         "max |difference| at N=2,000": worst[name]})
    fns = {"pairwise_accuracy": pairwise_accuracy, "kendall": kendall, "spearman": spearman,
           "ndcg@10": ndcg_at_k}
    for ties in (False, True):
        s, y = _data(BIG_N, 2, ties)
        for name, fn in fns.items():
            t = time.perf_counter()
            secs = best_time(lambda fn=fn, s=s, y=y: fn(s, y), repeat, warmup=0)
            logger.info("metric %s N=%d ties=%s: %.2fs (wall %.1fs)", name, BIG_N, ties, secs,
                        time.perf_counter() - t)
            sec.rows.append({"metric": name, "N": BIG_N, "data": "tied" if ties else "continuous",
                             "gatrank s": secs})
            if name in slowest:
                slowest[name] = max(slowest[name], secs)
    sec.checks = [
        Check(f"pairwise accuracy = O(N^2) definition at N={EXACT_N:,} (max |diff|)",
              worst["pairwise_accuracy"], "<=", EXACT_TOL),
        Check(f"Kendall tau-b = O(N^2) definition at N={EXACT_N:,} (max |diff|)",
              worst["kendall"], "<=", EXACT_TOL),
        Check("pairwise accuracy at N=1,000,000", slowest["pairwise_accuracy"], "<=",
              TIME_TARGET_S, "s"),
        Check("Kendall tau at N=1,000,000", slowest["kendall"], "<=", TIME_TARGET_S, "s"),
    ]
    return sec
