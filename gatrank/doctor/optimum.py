"""The runbook's scale checks read against the loss: what the loss's own optimum implies.

Three of the runbook's checks depend on the scale of the loss and of the targets, not on the
ranking: score std > 0.1, gradient norm > 0.01 and "loss decreasing" (a 10% drop). A ListNet
loss on targets 0.018 apart is minimal at ``scores = targets + c``, score std 0.018; a
LambdaRank-style loss weights each pair by an NDCG change of ~1e-3, so its gradients are
~1e-4 while it ranks perfectly. :func:`loss_optimum` measures the loss on perfect orderings
``s = a (y - mean y)`` over a wide range of scales ``a``: its lowest value, the scale where it
lies, and whether that scale is finite (a listwise or regression loss) or grows without bound
(a pairwise logistic loss). :func:`read_scale_checks` then reads a run whose ranking criteria
pass: a failing scale check is *explained* when the loss's optimum accounts for it, and such a
run fits, with a note that says why. A scale check alone never names a cause.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gatrank.checks.verdict import THRESHOLDS, Verdict

__all__ = [
    "RANKING_CHECKS",
    "SCALE_CHECKS",
    "LossOptimum",
    "ScaleReading",
    "loss_optimum",
    "read_scale_checks",
]

RANKING_CHECKS = ("pairwise_accuracy", "spearman", "pairwise_accuracy_random", "spearman_none")
"""The runbook's checks on the ranking itself: scale-free, never re-read."""
SCALE_CHECKS = ("score_std", "grad_norm", "loss_decreasing", "score_collapsed", "no_gradients",
                "loss_flat")
"""The runbook's checks whose values depend on the loss's and the targets' scale."""

_SCALES = np.unique(np.concatenate([np.logspace(-4, 6, 41), [1.0]]))
"""The scales ``a`` of the perfect orderings ``a (y - mean y)`` the loss is measured on."""

NEAR_MINIMUM = 0.5
"""A loss that covered at least this share of the drop a perfect ordering allows is near its
minimum: its gradients are small because there is little left to learn."""


@dataclass
class LossOptimum:
    """The loss on perfect orderings of one set of targets."""

    loss_constant: float
    """The loss at constant scores (all 0)."""
    loss_min: float
    """The lowest loss over the perfect orderings ``a (y - mean y)``."""
    scale: float
    """The ``a`` where it lies."""
    score_std: float
    """The scores' std there (``a`` times the targets' std)."""
    bounded: bool
    """The minimum lies at a finite scale: larger scores cost more (listwise, regression
    losses); False when the loss keeps falling as the scores spread (pairwise logistic)."""
    target_std: float

    def to_dict(self) -> dict[str, Any]:
        return {k: (float(f"{v:.4g}") if isinstance(v, float) and math.isfinite(v) else v)
                for k, v in vars(self).items()}


@dataclass
class ScaleReading:
    """A run's checks read against its loss's optimum."""

    fits: bool
    """The ranking criteria pass and every failing scale check is explained."""
    explained: dict[str, str] = field(default_factory=dict)
    """Failing scale check name -> why it does not mean a collapse."""
    unexplained: list[str] = field(default_factory=list)
    """Failing scale checks the optimum does not account for."""

    def note(self) -> str:
        """One sentence for the report: which runbook checks failed and why that is the loss's
        scale, not a collapse ("" when none was re-read)."""
        if not self.explained:
            return ""
        # a pass criterion and its red flag (score std > 0.1, < 0.01) share one explanation
        return ("the ranking criteria pass; " + "; ".join(dict.fromkeys(self.explained.values()))
                + ": read against the loss's optimum, not a collapse")


def loss_optimum(fn: Callable[..., Any], targets: Tensor,
                 group: Tensor | None = None) -> LossOptimum | None:
    """The loss ``fn(scores, targets, group) -> LossOutput`` (see
    :func:`gatrank.losses.make_loss_fn`) on perfect orderings of ``targets`` ``[B]`` at scales
    from 1e-4 to 1e6 (and exactly ``scores = targets - mean``).

    Returns:
        A :class:`LossOptimum`, or None when the loss cannot be evaluated there (it raises or
        is not finite at every scale): then the runbook's checks are read as they are.
    """
    y = targets.detach().reshape(-1).double()
    if y.numel() < 2 or float(y.std()) == 0.0:
        return None
    centred = (y - y.mean()).float()
    values = []
    with torch.no_grad():
        try:
            constant = float(fn(torch.zeros_like(centred), targets.reshape(-1).float(),
                                group).loss)
            for a in _SCALES:
                values.append(float(fn(centred * float(a), targets.reshape(-1).float(),
                                       group).loss))
        except Exception:  # a user's loss that cannot take these scores: no reading
            return None
    v = np.array(values)
    if not np.isfinite(v).any():
        return None
    v[~np.isfinite(v)] = np.inf
    k = int(np.argmin(v))
    tol = 1e-6 * max(1.0, abs(float(v[k])))
    bounded = k < len(v) - 1 and float(v[-1]) > float(v[k]) + tol
    std = float(y.std(unbiased=False))
    return LossOptimum(loss_constant=constant, loss_min=float(v[k]), scale=float(_SCALES[k]),
                       score_std=float(_SCALES[k]) * std, bounded=bounded, target_std=std)


def _progress(history: Sequence[dict[str, Any]], opt: LossOptimum) -> float:
    """The share of the drop a perfect ordering allows that the run's loss covered, from its
    first logged value to its last (0 for non-finite losses)."""
    first, last = float(history[0]["loss"]), float(history[-1]["loss"])
    if not (math.isfinite(first) and math.isfinite(last)):
        return 0.0
    room = first - opt.loss_min
    if room <= 1e-6 * max(1.0, abs(first)):
        return 1.0 if last <= opt.loss_min + 1e-6 * max(1.0, abs(first)) else 0.0
    return (first - last) / room


def read_scale_checks(verdict: Verdict, history: Sequence[dict[str, Any]],
                      optimum: LossOptimum | None) -> ScaleReading:
    """Whether a run whose ranking criteria pass fits, its scale checks read against the loss.

    A failing check is explained when:

    - score std (> 0.1, and the collapse flag < 0.01): the loss's minimum lies at a finite
      spread and the scores reach at least half of it;
    - loss decreasing (> 10%, and the flat-loss flag): the loss covered more than 10% of the
      drop a perfect ordering allows (its first logged value to the optimum);
    - gradient norm (> 0.01, and the no-gradient flag): the loss covered at least half of that
      drop: small gradients near a minimum, not gradients that never flowed.

    A run with a failing ranking criterion, or without a loss optimum, does not fit here (the
    runbook's verdict stands).
    """
    failing = {c.name: c for c in verdict.checks if not c.ok}
    if optimum is None or any(n in failing for n in RANKING_CHECKS) or not history:
        return ScaleReading(fits=verdict.passed)
    last = history[-1]
    progress = _progress(history, optimum)
    explained: dict[str, str] = {}
    unexplained: list[str] = []
    std_ok = optimum.bounded and last["score_std"] >= 0.5 * optimum.score_std
    for name, check in failing.items():
        if name in ("score_std", "score_collapsed") and std_ok:
            explained[name] = (
                f"score std {last['score_std']:.3g} (runbook: > {THRESHOLDS['score_std']:g}) is "
                f"what this loss wants for these targets: its minimum over perfect orderings "
                f"lies at score std {optimum.score_std:.3g} (targets' std "
                f"{optimum.target_std:.3g})")
        elif name in ("loss_decreasing", "loss_flat") and progress > THRESHOLDS["loss_drop"]:
            explained[name] = (
                f"the loss fell {_drop(history):.1%} (runbook: > {THRESHOLDS['loss_drop']:.0%}), "
                f"which is {progress:.0%} of the drop a perfect ordering allows "
                f"({history[0]['loss']:.4g} -> {optimum.loss_min:.4g})")
        elif name in ("grad_norm", "no_gradients") and progress >= NEAR_MINIMUM:
            explained[name] = (
                f"gradient norm {check.value:.3g} (runbook: > {THRESHOLDS['grad_norm']:g}) near "
                f"the loss's minimum: the loss covered {progress:.0%} of the drop a perfect "
                f"ordering allows, so little is left to learn")
        elif name in SCALE_CHECKS:
            unexplained.append(name)
    return ScaleReading(fits=not unexplained, explained=explained, unexplained=unexplained)


def _drop(history: Sequence[dict[str, Any]]) -> float:
    first, last = float(history[0]["loss"]), float(history[-1]["loss"])
    return (first - last) / first if first > 0 and math.isfinite(last) else 0.0
