"""The runbook's pass criteria and red flags, evaluated on a training history.

Pass (after ~50-100 epochs of the overfit test): pairwise accuracy > 0.9 (ideally > 0.95),
Spearman > 0.8 (ideally > 0.9), score std > 0.1, gradient norm > 0.01, loss decreasing.
Red flags: pairwise accuracy ~0.5-0.6, Spearman ~0-0.2, score std < 0.01, gradient norm ~0,
loss flat.

Those pass criteria are what an overfit test (32 graphs, no dropout) must reach
(:func:`evaluate_verdict`); a run over more graphs is judged as training by the runbook's
Step 3, "Monitor training" (:func:`evaluate_training`): score std, pairwise accuracy improving,
gradient norms > 0.01, validation where the run reports it, and the same red flags.
:func:`evaluate_run` picks one by the graphs an epoch trains on (:data:`OVERFIT_MAX_GRAPHS`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gatrank.render import verdict_html

__all__ = [
    "THRESHOLDS",
    "KINDS",
    "OVERFIT_TEST",
    "TRAINING",
    "OVERFIT_MAX_GRAPHS",
    "Check",
    "Verdict",
    "summarize_checks",
    "runbook_check",
    "judgement",
    "best_record",
    "step3_checks",
    "evaluate_verdict",
    "evaluate_training",
    "evaluate_run",
    "stop_at_verdict",
    "format_verdict",
    "loss_drop",
    "RANKING_GAIN",
    "still_learning",
]

THRESHOLDS: dict[str, float] = {
    "pairwise_accuracy": 0.9,
    "pairwise_accuracy_ideal": 0.95,
    "spearman": 0.8,
    "spearman_ideal": 0.9,
    "score_std": 0.1,
    "grad_norm": 0.01,
    # Loss "decreasing": the last logged loss is at least 10% below the first.
    "loss_drop": 0.10,
    # Red flags.
    "flag_pairwise_accuracy": 0.6,
    "flag_spearman": 0.2,
    "flag_score_std": 0.01,
    "flag_grad_norm": 1e-4,
    "flag_loss_drop": 0.01,
}
"""Every threshold the verdict uses; notebooks draw these lines on their plots."""


OVERFIT_TEST = "overfit test"
"""A run judged by the overfit test's thresholds (the runbook's "Expected Results if Fixed")."""
TRAINING = "training"
"""A run judged as training (the runbook's Step 3, "Monitor training", and its red flags)."""

OVERFIT_MAX_GRAPHS = 64
"""The most graphs per epoch a run may train on and still be judged as an overfit test: the
runbook's 32 (``--overfit-n 32``) with headroom for a larger overfit subset. A model trained
on more graphs, with dropout, is not expected to reach the overfit test's training-set
pairwise accuracy > 0.9."""

KINDS = ("pass", "red_flag", "warning")
"""What a check's ``ok`` means: ``pass``, a criterion met (the step fails without it);
``red_flag``, the flag is *not* raised; ``warning``, reported but never failing."""


@dataclass
class Check:
    """One check of a step against one rule; ``to_dict()`` is what results files record.

    An empty ``detail`` is not stored on the instance (the class default answers for it), so
    ``to_dict()`` and ``vars(check)`` hold ``detail`` only when it is set, as recorded checks
    always have.
    """

    name: str
    kind: str
    """One of :data:`KINDS`."""
    rule: str
    """The runbook's wording, e.g. ``pairwise accuracy > 0.9``."""
    value: float | None
    """What was measured (None: nothing to measure)."""
    ok: bool
    """Pass criteria and warnings: met. Red flags: *not* raised."""
    detail: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"check {self.name!r}: kind {self.kind!r} must be 'pass', "
                             "'red_flag' or 'warning'")
        self.value = None if self.value is None else float(self.value)
        self.ok = bool(self.ok)
        if not self.detail:
            del self.detail

    def to_dict(self) -> dict[str, Any]:
        """``{name, kind, rule, value, ok[, detail]}``."""
        return dict(vars(self))


def summarize_checks(checks: Sequence[Check | Mapping[str, Any]]) -> tuple[bool, str]:
    """``(passed, label)`` of checks (objects or their dicts): passed when every ``pass``
    check is ok; the label also names red flags (``FAIL (red flags)``) and warnings
    (``PASS (with warnings)``)."""
    pairs = [(c.kind, c.ok) if isinstance(c, Check) else (c["kind"], c["ok"]) for c in checks]
    passed = all(ok for kind, ok in pairs if kind == "pass")
    flags = any(not ok for kind, ok in pairs if kind == "red_flag")
    warns = any(not ok for kind, ok in pairs if kind == "warning")
    if passed:
        return True, "PASS (with warnings)" if warns or flags else "PASS"
    return False, "FAIL (red flags)" if flags else "FAIL"


def _rule(rule: str, value: float) -> tuple[str, str, bool]:
    """``(kind, wording, ok)`` of one of the runbook's rules on ``value``, at the current
    :data:`THRESHOLDS`."""
    t = THRESHOLDS
    rules = {
        "pairwise_accuracy": ("pass", f"pairwise accuracy > {t['pairwise_accuracy']}",
                              value > t["pairwise_accuracy"]),
        "spearman": ("pass", f"Spearman > {t['spearman']}", value > t["spearman"]),
        "score_std": ("pass", f"score std > {t['score_std']}", value > t["score_std"]),
        "grad_norm": ("pass", f"gradient norm > {t['grad_norm']}", value > t["grad_norm"]),
        "loss_decreasing": ("pass", f"loss decreasing (drop > {t['loss_drop']:.0%})",
                            value > t["loss_drop"]),
        "pairwise_accuracy_random": (
            "red_flag", f"pairwise accuracy ~0.5-{t['flag_pairwise_accuracy']} (random)",
            value > t["flag_pairwise_accuracy"]),
        "spearman_none": ("red_flag", f"Spearman ~0-{t['flag_spearman']} (no correlation)",
                          value > t["flag_spearman"]),
        "score_collapsed": ("red_flag",
                            f"score std < {t['flag_score_std']} (collapsed to constant)",
                            value >= t["flag_score_std"]),
        "no_gradients": ("red_flag", "gradient norms ~0 (no gradients)",
                         value >= t["flag_grad_norm"]),
        "loss_flat": ("red_flag", "loss not decreasing", value >= t["flag_loss_drop"]),
        # Step 3, "Monitor training": a difference to the first logged epoch, or the Spearman
        # red flag's threshold as what a trained model must clear
        "pairwise_accuracy_improved": (
            "pass", "pairwise accuracy improved over the first logged epoch", value > 0),
        "spearman_above_chance": ("pass", f"Spearman > {t['flag_spearman']}, above chance",
                                  value > t["flag_spearman"]),
    }
    if rule not in rules:
        raise ValueError(f"unknown runbook rule {rule!r}; known: {sorted(rules)}")
    return rules[rule]


def runbook_check(rule: str, value: float, *, name: str = "", scope: str = "",
                  note: str = "") -> Check:
    """The runbook's ``rule`` (a pass criterion or a red flag, named as in
    :func:`evaluate_verdict`) on a measured ``value``.

    Args:
        name: the check's name (default: the rule's).
        scope: what was measured, before the wording (``validation`` -> ``validation score
            std > 0.1``).
        note: how it was measured, in parentheses after the wording (``median``).
    """
    kind, wording, ok = _rule(rule, value)
    text = " ".join(w for w in (scope, wording, f"({note})" if note else "") if w)
    return Check(name or rule, kind, text, value, ok)


@dataclass
class Verdict:
    passed: bool
    """Every pass criterion is met."""
    checks: list[Check] = field(default_factory=list)
    epochs_to_pass: int | None = None
    """First logged epoch meeting pairwise accuracy, Spearman and score std criteria."""
    epochs_to_ideal: int | None = None
    """First logged epoch with pairwise accuracy > 0.95, Spearman > 0.9 and score std > 0.1."""
    judged_as: str = OVERFIT_TEST
    """Whose thresholds were applied: :data:`OVERFIT_TEST` or :data:`TRAINING`."""
    graphs_per_epoch: int | None = None
    """The graphs per epoch that made the run a training run (None for an overfit test: the
    overfit test's thresholds are the default, also where the count is not known)."""
    trend: dict[str, Any] | None = None
    """A run that has not passed but still learns when it ends: :func:`still_learning`'s
    trend (set by :func:`evaluate_run`; None otherwise)."""

    @property
    def still_learning(self) -> str:
        """The trend of a run still learning, in words ("" for none)."""
        t = self.trend
        if not t:
            return ""
        return (f"still learning: pairwise accuracy {t['from']:.3f} -> {t['to']:.3f} over "
                f"epochs {t['epochs'][0]}-{t['epochs'][1]} ({t['slope']:+.2g} per epoch); at "
                f"that rate it reaches {THRESHOLDS['pairwise_accuracy']} in about "
                f"{math.ceil(t['to_pass'])} more epochs: train longer before judging it")

    @property
    def validated(self) -> bool:
        """Judged on validation metrics (a training run that reported them)."""
        return any(c.name.startswith("val_") for c in self.checks)

    @property
    def thresholds(self) -> str:
        """Which thresholds were applied, in words (the last line of :func:`format_verdict`)."""
        if self.judged_as == OVERFIT_TEST:
            return ("judged as an overfit test: the runbook's expected results of the overfit "
                    "test (32 graphs, no dropout)")
        n = (f"{self.graphs_per_epoch} graphs per epoch" if self.graphs_per_epoch else
             "graphs per epoch not known")
        on = ("on the validation metrics" if self.validated else
              "on the training metrics (the run reported no validation metrics)")
        return (f"judged as training ({n}; an overfit test has at most {OVERFIT_MAX_GRAPHS}): "
                f"the runbook's Step 3 checks and red flags, {on}")

    @property
    def red_flags(self) -> list[Check]:
        return [c for c in self.checks if c.kind == "red_flag" and not c.ok]

    @property
    def label(self) -> str:
        """``PASS``, ``FAIL (red flags)`` or ``FAIL`` (as :func:`summarize_checks` says)."""
        return summarize_checks(self.checks)[1]

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "label": self.label,
            "epochs_to_pass": self.epochs_to_pass,
            "epochs_to_ideal": self.epochs_to_ideal,
            "checks": [c.to_dict() for c in self.checks],
            "red_flags": [c.name for c in self.red_flags],
            "judged_as": self.judged_as,
            "graphs_per_epoch": self.graphs_per_epoch,
            "thresholds": self.thresholds,
            "trend": self.trend,
        }

    def __str__(self) -> str:
        return format_verdict(self)

    def _repr_html_(self) -> str:
        return verdict_html(self.to_dict(), still_learning=self.still_learning)

    def _repr_pretty_(self, p, cycle) -> None:  # IPython's text form: the table, not a repr
        p.text(str(self))

    def table(self):
        """Checks as a pandas DataFrame (for notebooks)."""
        import pandas as pd  # deferred: the verdict itself needs no pandas

        return pd.DataFrame([c.to_dict() for c in self.checks])


def loss_drop(history: Sequence[dict]) -> float:
    """Relative drop of the loss from the first logged record to the last (0.1 = 10% lower);
    0 when either loss is non-finite or the first is not positive."""
    first, last = history[0]["loss"], history[-1]["loss"]
    if not (np.isfinite(first) and np.isfinite(last)) or first <= 0:
        return 0.0
    return float((first - last) / first)


def evaluate_verdict(history: Sequence[dict[str, Any]], prefix: str = "") -> Verdict:
    """Evaluate the runbook's criteria on logged records (see :mod:`gatrank.training`).

    The accuracy, Spearman and score-std criteria use the last record. The gradient criterion
    uses the median over the learning phase: the records up to the epoch where the accuracy,
    Spearman and score-std criteria were first met (all records if never), because a model
    that has fit its data legitimately has tiny gradients afterwards; "gradients flowing" is
    about learning, not about the last step of a solved problem.

    Args:
        history: records with ``loss``, ``pairwise_accuracy``, ``spearman``, ``score_std``,
            ``grad_norm`` (as ``metrics.jsonl`` holds them).
        prefix: read ``{prefix}pairwise_accuracy`` etc., e.g. ``val_`` for validation metrics.
    """
    if not history:
        raise ValueError("cannot evaluate a verdict on an empty history (no logged epoch)")
    t = THRESHOLDS
    last = history[-1]
    pa = float(last[f"{prefix}pairwise_accuracy"])
    sp = float(last[f"{prefix}spearman"])
    std = float(last[f"{prefix}score_std"])

    def first_epoch(pa_min: float, sp_min: float) -> int | None:
        for h in history:
            if (h[f"{prefix}pairwise_accuracy"] > pa_min and h[f"{prefix}spearman"] > sp_min
                    and h[f"{prefix}score_std"] > t["score_std"]):
                return int(h["epoch"])
        return None

    epochs_to_pass = first_epoch(t["pairwise_accuracy"], t["spearman"])
    learning_phase = [h for h in history if epochs_to_pass is None or h["epoch"] <= epochs_to_pass]
    gn = float(np.median([h["grad_norm"] for h in learning_phase]))
    drop = loss_drop(history)
    checks = [
        runbook_check("pairwise_accuracy", pa),
        runbook_check("spearman", sp),
        runbook_check("score_std", std),
        runbook_check("grad_norm", gn, note="median while learning"),
        runbook_check("loss_decreasing", drop),
        runbook_check("pairwise_accuracy_random", pa),
        runbook_check("spearman_none", sp),
        runbook_check("score_collapsed", std),
        runbook_check("no_gradients", gn),
        runbook_check("loss_flat", drop),
    ]
    passed = summarize_checks(checks)[0]
    return Verdict(
        passed=passed,
        checks=checks,
        epochs_to_pass=epochs_to_pass,
        epochs_to_ideal=first_epoch(t["pairwise_accuracy_ideal"], t["spearman_ideal"]),
    )


def judgement(graphs_per_epoch: int | None) -> str:
    """:data:`OVERFIT_TEST` for a run over at most :data:`OVERFIT_MAX_GRAPHS` graphs per epoch
    (or an unknown number), :data:`TRAINING` for more."""
    if graphs_per_epoch is None or graphs_per_epoch <= OVERFIT_MAX_GRAPHS:
        return OVERFIT_TEST
    return TRAINING


def best_record(history: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The record with the highest validation Spearman (the first of equals, as ``gatrank
    train`` keeps ``best.pt``); the last record in a history without validation."""
    validated = [h for h in history if "val_spearman" in h]
    return max(validated, key=lambda h: h["val_spearman"]) if validated else history[-1]


def step3_checks(history: Sequence[Mapping[str, Any]], best: Mapping[str, Any], *,
                 first: Mapping[str, Any] | None = None, prefix: str = "val_",
                 scope: str = "validation") -> list[Check]:
    """Step 3's "Monitor training" criteria: score std > 0.1 at the ``best`` record (not
    collapsing), pairwise accuracy there above the ``first`` record's (improving) and the
    median gradient norm over ``history`` > 0.01 (flowing).

    Args:
        first: the record improvement is measured from (default: the first of ``history``).
        prefix: read ``{prefix}score_std`` and ``{prefix}pairwise_accuracy``, falling back to
            the training metrics in a record without them.
        scope: what the metrics are, in the checks' wording; the checks are named ``val_*``
            for ``prefix="val_"``.
    """
    first = history[0] if first is None else first
    std = best.get(f"{prefix}score_std", best["score_std"])
    pa0 = first.get(f"{prefix}pairwise_accuracy", first["pairwise_accuracy"])
    pa = best.get(f"{prefix}pairwise_accuracy", best["pairwise_accuracy"])
    gn = float(np.median([h["grad_norm"] for h in history]))
    where = "best epoch" if prefix else "last epoch"
    return [
        runbook_check("score_std", std, name=f"{prefix}score_std", scope=scope, note=where),
        runbook_check("pairwise_accuracy_improved", pa - pa0,
                      name=f"{prefix}pairwise_accuracy_improved", scope=scope),
        runbook_check("grad_norm", gn, note="median"),
    ]


def evaluate_training(history: Sequence[Mapping[str, Any]], *,
                      graphs_per_epoch: int | None = None, validation: bool = True) -> Verdict:
    """Judge a run as training: the runbook's Step 3 ("Monitor training") and its red flags,
    not the overfit test's thresholds, which a model trained on many graphs with dropout is not
    expected to reach on its training scores.

    Pass criteria: score std > 0.1, pairwise accuracy improved over the first logged epoch,
    median gradient norm > 0.01 (:func:`step3_checks`); with validation metrics (records with
    ``val_spearman``, ``val_pairwise_accuracy``, ``val_score_std``) the first two are read on
    validation at the best epoch (highest validation Spearman), and validation Spearman there
    must clear the red flag (> 0.2). Red flags, at the last record: the training metrics'
    (pairwise accuracy ~0.5-0.6, Spearman ~0-0.2, score std < 0.01), gradient norms ~0 (median),
    loss not decreasing, and with validation the same three on validation.

    Args:
        history: logged records (``metrics.jsonl``).
        graphs_per_epoch: the graphs an epoch trains on, for the verdict's wording.
        validation: ``False`` judges the training metrics alone, even where the records hold
            validation ones (whether the model learns its training set at all).
    """
    if not history:
        raise ValueError("cannot evaluate a verdict on an empty history (no logged epoch)")
    validated = [h for h in history if "val_spearman" in h] if validation else []
    last = history[-1]
    if validated:
        best = best_record(validated)
        checks = step3_checks(history, best, first=validated[0])
        checks.append(runbook_check("spearman_above_chance", best["val_spearman"],
                                    name="val_spearman", scope="validation", note="best epoch"))
    else:
        checks = step3_checks(history, last, prefix="", scope="training")
    gn = next(c.value for c in checks if c.name == "grad_norm")
    drop = loss_drop(history)
    checks += [
        runbook_check("pairwise_accuracy_random", last["pairwise_accuracy"], scope="training"),
        runbook_check("spearman_none", last["spearman"], scope="training"),
        runbook_check("score_collapsed", last["score_std"], scope="training"),
        runbook_check("no_gradients", gn),
        runbook_check("loss_flat", drop),
    ]
    if validated:
        v = validated[-1]
        checks += [runbook_check(rule, v[f"val_{key}"], name=f"val_{rule}", scope="validation")
                   for rule, key in (("pairwise_accuracy_random", "pairwise_accuracy"),
                                     ("spearman_none", "spearman"),
                                     ("score_collapsed", "score_std"))]
    return Verdict(passed=summarize_checks(checks)[0], checks=checks, judged_as=TRAINING,
                   graphs_per_epoch=graphs_per_epoch)


def evaluate_run(history: Sequence[dict[str, Any]], *, graphs_per_epoch: int | None = None
                 ) -> Verdict:
    """The verdict by the thresholds that fit the run (:func:`judgement`): the overfit test's
    (:func:`evaluate_verdict`) for at most :data:`OVERFIT_MAX_GRAPHS` graphs per epoch or an
    unknown number, training's (:func:`evaluate_training`) for more. A run that failed but
    still learns when it ends carries its :attr:`Verdict.trend`, and says so."""
    verdict = (evaluate_training(history, graphs_per_epoch=graphs_per_epoch)
               if judgement(graphs_per_epoch) == TRAINING else evaluate_verdict(history))
    if not verdict.passed:
        verdict.trend = still_learning(history)
    return verdict


def stop_at_verdict(history: Sequence[dict[str, Any]]) -> str | None:
    """A ``stop_when`` rule for :func:`gatrank.training.train` (``--stop-at-verdict``): a reason
    to stop at the first logged epoch where every pass criterion holds, None before.

    Needs two records at least: "loss decreasing" compares the first logged loss with the last,
    so a single record can never pass it.
    """
    if len(history) < 2 or not evaluate_verdict(history).passed:
        return None
    return (f"stopped at the verdict: every pass criterion held at epoch "
            f"{int(history[-1]['epoch'])} (--stop-at-verdict)")


def format_verdict(verdict: Verdict) -> str:
    """A plain-text table of the checks for the terminal, the trend of a run still learning,
    and a last line naming the thresholds applied (:attr:`Verdict.thresholds`)."""
    lines = [f"verdict: {verdict.label}"]
    # the overfit test's rules fit in 45 characters; a training run's name their scope too
    width = max([45, *(len(c.rule) for c in verdict.checks)])
    for c in verdict.checks:
        mark = ("ok " if c.ok else "FAIL") if c.kind == "pass" else ("-- " if c.ok else "FLAG")
        lines.append(f"  [{mark}] {c.rule:<{width}} measured {c.value:.4g}")
    if verdict.epochs_to_pass is not None:
        lines.append(f"  criteria first met at epoch {verdict.epochs_to_pass}"
                     + (f", ideal at epoch {verdict.epochs_to_ideal}"
                        if verdict.epochs_to_ideal is not None else ""))
    if verdict.trend:
        lines.append(f"  {verdict.still_learning}")
    lines.append(f"  {verdict.thresholds}")
    return "\n".join(lines)


RANKING_GAIN = 0.01
"""A rise of pairwise accuracy this large over the last half of a run means it still learns
(the doctor's plateau rule uses it too)."""


def still_learning(history: Sequence[dict], within: float = math.inf) -> dict[str, Any] | None:
    """The trend of a run that is still learning when it ends: over the last half of its
    logged epochs the pairwise accuracy rises (by at least the plateau rule's 0.01) and the
    loss falls, fast enough to reach the runbook's 0.9 in ``within`` more epochs at that rate;
    None otherwise, or with fewer than 4 finite records.

    Returns:
        ``{"slope" (pairwise accuracy per epoch, least squares), "from", "to" (its first and
        last value in that half), "epochs" (that half's first and last epoch), "to_pass"
        (epochs to 0.9 at that rate)}``.
    """
    recs = [r for r in history if math.isfinite(r["loss"])]
    if len(recs) < 4 or len(recs) != len(history):
        return None
    half = recs[len(recs) // 2 - 1:] if len(recs) % 2 == 0 else recs[len(recs) // 2:]
    ep = np.array([r["epoch"] for r in half], dtype=float)
    pa = np.array([r["pairwise_accuracy"] for r in half], dtype=float)
    loss = np.array([r["loss"] for r in half], dtype=float)
    slope, loss_slope = float(np.polyfit(ep, pa, 1)[0]), float(np.polyfit(ep, loss, 1)[0])
    if slope * (ep[-1] - ep[0]) < RANKING_GAIN or loss_slope >= 0:
        return None
    to_pass = max(THRESHOLDS["pairwise_accuracy"] - pa[-1], 0.0) / slope
    if to_pass > within:
        return None
    return {"slope": slope, "from": float(pa[0]), "to": float(pa[-1]),
            "epochs": (int(ep[0]), int(ep[-1])), "to_pass": to_pass}
