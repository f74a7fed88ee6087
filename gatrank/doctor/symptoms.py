"""Reading a training run: what a history shows (:class:`Run`), and the causes its measurements
suggest (:func:`symptoms`), what it says about the learning rate, and the verdict of a run
that failed."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gatrank.checks.verdict import THRESHOLDS, evaluate_verdict, loss_drop, still_learning
from gatrank.doctor.optimum import LossOptimum, ScaleReading, read_scale_checks
from gatrank.doctor.report import CAUSES, DOCTOR_THRESHOLDS
from gatrank.doctor.state import Diagnosis
from gatrank.losses import LN2

__all__ = [
    "Run",
    "plateau",
    "median_grad",
    "still_learning",
    "symptoms",
    "lr_symptom",
    "failure_verdict",
    "trace_fix",
]


@dataclass
class Run:
    """One training run of the doctor and what it showed."""

    name: str
    history: list[dict[str, Any]]
    error: str = ""
    nonfinite: bool = False
    stopped: str = ""
    seconds: float = 0.0
    optimum: LossOptimum | None = None
    """The loss on perfect orderings of the run's targets: what its scale checks are read
    against (:mod:`~gatrank.doctor.optimum`); None reads the runbook's checks as they are."""
    dropout_off: list[dict[str, Any]] = field(default_factory=list)
    """The dropout the overfit test switched off inside the model (``summary["dropout_off"]``
    of :func:`gatrank.training.train`)."""

    @property
    def verdict(self):
        return evaluate_verdict(self.history) if self.history else None

    @property
    def reading(self) -> ScaleReading:
        """The runbook's checks with the scale checks read against the loss's optimum."""
        v = self.verdict
        if v is None:
            return ScaleReading(fits=False)
        return read_scale_checks(v, self.history, self.optimum)

    @property
    def passed(self) -> bool:
        """The runbook's pass criteria hold, or its ranking criteria do and every failing
        scale check is what the loss's optimum implies."""
        return not self.nonfinite and self.reading.fits  # no record: reading does not fit

    @property
    def learns(self) -> bool:
        """No red flag: not random, not collapsed, gradients flow, the loss moves (a scale
        flag the loss's optimum explains does not count)."""
        v = self.verdict
        if self.nonfinite or v is None:
            return False
        explained = read_scale_checks(v, self.history, self.optimum).explained
        return not [c for c in v.red_flags if c.name not in explained]

    def problem(self) -> str:
        """What went wrong, in words: the non-finite error or the red flags raised."""
        if self.error:
            return self.error
        v = self.verdict
        if v is None:
            return "no epoch was logged"
        return "red flags: " + (", ".join(c.name for c in v.red_flags) or "none")

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"epochs": self.history[-1]["epoch"] if self.history else 0}
        if self.history:
            last = self.history[-1]
            out.update(pairwise_accuracy=round(last["pairwise_accuracy"], 4),
                       spearman=round(last["spearman"], 4), score_std=last["score_std"],
                       loss=last["loss"], grad_norm_median=median_grad(self.history))
        if self.stopped:
            out["stopped"] = self.stopped
        if self.error:
            out["error"] = self.error
        return out


def plateau(history: Sequence[dict], window: int, floor: float | None = None) -> bool:
    """Neither the loss nor the ranking improved over the last ``window`` epochs: the best loss
    of those epochs is not 1% closer to ``floor`` than the best loss before them (non-finite
    losses count as no improvement), and their best pairwise accuracy is not 0.01 above the best
    before them (a listwise loss can sit near its constant-score value while the ranking still
    improves).

    Args:
        floor: the lowest value the loss can reach (the loss's optimum over perfect orderings,
            :func:`gatrank.doctor.optimum.loss_optimum`); None or a floor not below the best
            loss so far: 0, i.e. 1% of the loss itself. A ListNet loss on close targets can
            fall by 1e-4 in all, so 1% of its value would call every run a plateau.
    """
    epoch = history[-1]["epoch"]
    if epoch < window:
        return False
    old = [r for r in history if r["epoch"] <= epoch - window]
    new = [r for r in history if r["epoch"] > epoch - window]
    before = [r["loss"] for r in old if math.isfinite(r["loss"])]
    recent = [r["loss"] for r in new if math.isfinite(r["loss"])]
    if not before:
        return False
    best = min(before)
    base = floor if floor is not None and math.isfinite(floor) and floor < best else 0.0
    if min(recent, default=math.inf) <= best - DOCTOR_THRESHOLDS["flat_loss_drop"] * (best - base):
        return False
    ranked = [r.get("pairwise_accuracy", math.nan) for r in new]
    ranked_before = [r.get("pairwise_accuracy", math.nan) for r in old]
    return not (np.nanmax(ranked + [-1.0]) > np.nanmax(ranked_before + [-1.0])
                + DOCTOR_THRESHOLDS["ranking_gain"])


def median_grad(history: Sequence[dict]) -> float:
    """The median gradient norm over the logged epochs (0 for no epoch)."""
    return float(np.median([h["grad_norm"] for h in history])) if history else 0.0


def symptoms(doc: Diagnosis, run: Run, stage: str) -> None:
    """Causes suggested by a failing run's measurements (and the static checks)."""
    # whether a cause already found would explain small gradients by itself
    explained = _static_symptoms(doc, run, stage)
    if _trace_symptoms(doc, stage):
        explained = True
    strong = DOCTOR_THRESHOLDS["strong"]
    if any(c.score >= strong for c in doc.causes.values() if c.id in _FLATTENING):
        explained = True
    if not run.history:
        return
    if _unit_symptoms(doc, run.history, stage):
        explained = True
    _training_symptoms(doc, run.history, stage, explained)


_FLATTENING = ("bad_initialization", "constant_output_layer", "dead_activations",
               "score_head_saturated", "frozen_parameters")
"""Causes that flatten the scores and the gradients by themselves: found first, they make
``vanishing_gradients`` a consequence rather than the cause."""

_TRACE_SCORE = {"constant_output_layer": 0.95, "bad_initialization": 0.95,
                "dead_activations": 0.9, "score_head_saturated": 0.9}
"""How likely the trace's culprit makes its cause: a layer whose output is the same for every
graph while its input differs is where the ranking signal dies."""


def _trace_symptoms(doc: Diagnosis, stage: str) -> bool:
    """The signal trace's culprit (at initialisation, else after the overfit run) as its cause,
    with a fix that names the module; True when there was one."""
    for when, trace in doc.traces.items():
        culprit = trace.culprit
        if culprit is None:
            continue
        at = "at initialisation" if when == "init" else "after the overfit run"
        score = _TRACE_SCORE.get(culprit.cause, 0.8) - (0.1 if when != "init" else 0.0)
        fix = trace_fix(culprit)
        known = doc.causes.get(culprit.cause)
        if known is not None and known.measured.get("constant_weights"):
            fix += " Here: " + ", ".join(known.measured["constant_weights"][:4]) + "."
        doc.cause(culprit.cause, f"signal trace {at}: {culprit.evidence}", score, stage,
                  fix=fix, culprit=culprit.to_dict())
        return True
    return False


def trace_fix(culprit: Any) -> str:
    """The fix for the signal trace's culprit, naming its module or the call in the model's
    code, with its file and line (and never keeping it)."""
    where = f"{culprit.path} ({culprit.type})"
    op = getattr(culprit, "op", "")
    if culprit.where == "forward" and op:
        call = f"{op} at {culprit.site}" + (f" (`{culprit.code}`)" if culprit.code else "")
        if culprit.cause == "dead_activations":
            return (f"Remove {call}, or apply it to a hidden layer before the last Linear: "
                    "every input it gets is below its kink, so every graph gets the same score "
                    "and no gradient passes back. A ranking loss needs no bound on the scores; "
                    "where they must be non-negative, use a softplus of the last Linear's "
                    "output, without an offset.")
        if culprit.cause == "score_head_saturated":
            return (f"Remove {call}, or scale its input down: it is at its bound for every "
                    "graph (a ranking loss needs unbounded scores).")
        return (f"Remove {call}: it gives every graph the same output (a softmax over one "
                "unit, a normalization over a size-1 dimension, a broadcast of one value). "
                f"Return {culprit.path}'s output as the score.")
    if culprit.where == "forward":
        return (f"Every module's output still differs between graphs, and the last one, "
                f"{where}, too; the model's forward code after it makes the scores the same "
                "for every graph (a functional softmax over one unit, a relu/clamp, an "
                f"expand or a constant). Return {culprit.path}'s output as the score: remove "
                "that operation, or apply it before the last Linear.")
    if culprit.cause == "dead_activations":
        return (f"{where} outputs 0 for every graph: its input is negative everywhere. Put a "
                "LayerNorm before it (model.head: layernorm for gatrank's GAT), re-initialise "
                "the Linear that feeds it, or lower the learning rate so units do not die; a "
                "LeakyReLU keeps a gradient.")
    if culprit.cause == "score_head_saturated":
        return (f"{where} is stuck at its bound for every graph: drop it from the score "
                "path (a ranking loss needs unbounded scores; model.head: layernorm for "
                "gatrank's GAT) or scale its input down.")
    if culprit.cause == "bad_initialization":
        return (f"{where} starts with constant weights, so its output is the same for every "
                f"graph: {CAUSES['bad_initialization']['fix']}")
    return (f"Remove {where}, or change what it works over: it gives every graph the same "
            "output (a normalization over a size-1 dimension, a softmax over one unit). "
            "Normalize the hidden layer before the last Linear instead and return the last "
            "Linear's output as the score.")


def _static_symptoms(doc: Diagnosis, run: Run, stage: str) -> bool:
    """Frozen parameters and exploding gradients, from the model stage's checks and the run's
    error; True when one of them is strong enough to explain small gradients."""
    t = DOCTOR_THRESHOLDS
    frozen, path = doc.static.get("frozen"), doc.static.get("path")
    explained = False
    if frozen is not None:
        stuck = set(frozen["frozen"]) | set(frozen["not_in_optimizer"])
        # without a gradient-path check (a history read with a Monitor's findings), the
        # parameters the loop never gave a gradient
        stuck |= set(path["unused"]) if path else set(doc.static.get("unused", ()))
        params = doc.static["numel"]
        total = sum(params.values()) or 1
        frac = sum(params.get(n, 0) for n in stuck) / total
        if stuck:
            names = ", ".join(sorted(stuck)[:4]) + (" ..." if len(stuck) > 4 else "")
            left = total - sum(params.get(n, 0) for n in stuck)
            doc.cause("frozen_parameters",
                      f"{len(stuck)} of {len(params)} parameter tensors ({names}) have "
                      f"requires_grad=False or get no gradient: {frac:.2%} of the weights, "
                      f"{left} left to train",
                      0.9 if frac >= t["frozen_fraction"] else 0.5, stage,
                      fix=_frozen_fix(frozen, stuck), frozen_fraction=frac)
            if frac >= t["frozen_fraction"]:
                explained = True
    big = path is not None and path["grad_norm"] >= t["exploding_grad_norm"]
    fix = _exploding_fix(doc)
    if path is not None and (not path["finite"] or big):
        gn = path["grad_norm"]
        doc.cause("exploding_gradients",
                  f"gradient norm {gn:.3g} before any update (threshold "
                  f"{t['exploding_grad_norm']:g}); loss {path['loss']:.4g} = "
                  f"{path['loss'] / LN2:.3g} x ln 2", 0.9, stage, fix=fix,
                  grad_norm_at_init=gn)
        explained = True
    at = re.search(r"at epoch (\d+), batch (\d+)", run.error)
    if run.nonfinite and at and at.groups() == ("1", "0"):
        doc.cause("exploding_gradients", f"{run.error} — at the very first step, so no "
                  "learning-rate step caused it", 0.9, stage, fix=fix)
    return explained


def _frozen_fix(frozen: dict[str, Any], stuck: set[str]) -> str:
    """The frozen-parameter fix naming what to change for each kind of stuck parameter."""
    parts = []
    for what, names in (("set requires_grad=True on", frozen["frozen"]),
                        ("add to the optimizer", frozen["not_in_optimizer"]),
                        ("use in forward() (no gradient reaches them)",
                         sorted(stuck - set(frozen["frozen"]) - set(frozen["not_in_optimizer"])))):
        if names:
            parts.append(f"{what} {', '.join(sorted(names)[:4])}"
                         + (f" and {len(names) - 4} more" if len(names) > 4 else ""))
    return f"{CAUSES['frozen_parameters']['fix']} Here: {'; '.join(parts)}."


def _exploding_fix(doc: Diagnosis) -> str:
    """The exploding-gradient fix that follows the evidence: targets far from unit scale
    (``unscaled_targets`` raised) are what to fix first, not the features or the learning
    rate; otherwise the stabilizers the config switched off."""
    unscaled = doc.causes.get("unscaled_targets")
    if unscaled is None:
        tc, mc = doc.cfg.training, doc.cfg.model
        off = ([f"training.grad_clip is {tc.grad_clip:g} (off): set 1.0"]
               if tc.grad_clip <= 0 else [])
        off += ([f"model.head is {mc.head!r}: set layernorm"]
                if doc.builtin and mc.head != "layernorm" else [])
        return f"{CAUSES['exploding_gradients']['fix']} Here: {'; '.join(off)}." if off else ""
    m = unscaled.measured
    return (f"The gradients are large because the targets are (mean {m['y_mean']:.4g}, std "
            f"{m['y_std']:.4g}; see unscaled_targets): standardize y first, and keep "
            "training.grad_clip at 1.0; the features and the learning rate are not what to "
            "change.")


def _unit_symptoms(doc: Diagnosis, h: Sequence[dict[str, Any]], stage: str) -> bool:
    """What the probe saw in the units: dead ReLUs, saturated outputs, oversmoothing, inputs
    that do not differ; True when one that explains small gradients was found."""
    t = DOCTOR_THRESHOLDS
    first, last = h[0], h[-1]
    explained = False
    dead = [r.get("dead_fraction") for r in h if r.get("dead_fraction") is not None]
    if dead and max(dead) >= t["dead_fraction"]:
        at_init = dead[0] >= t["dead_fraction"]
        when = "from the first epoch" if at_init else f"by epoch {last['epoch']}"
        doc.cause("dead_activations",
                  f"{max(dead):.0%} of the score head's ReLU units output 0 for every probe "
                  f"graph ({when}; threshold {t['dead_fraction']:.0%})",
                  0.9 if at_init else 0.7, stage, dead_fraction=max(dead))
        explained = True
    sat = [r.get("saturated_fraction") for r in h if r.get("saturated_fraction") is not None]
    if sat and max(sat) >= t["saturated_fraction"]:
        at_init = sat[0] >= t["saturated_fraction"]
        doc.cause("score_head_saturated",
                  f"{max(sat):.0%} of the bounded outputs lie within 0.1% of their limits "
                  f"(score std {last['score_std']:.3g})", 0.9 if at_init else 0.7, stage,
                  saturated_fraction=max(sat))
        explained = True
    mads = _mad_ratio(first)
    if mads is not None and mads[0] < t["oversmoothing_mad_ratio"]:
        ratio, mad_last, n_layers = mads
        doc.cause("oversmoothing",
                  f"node embeddings of a graph become indistinguishable with depth: mean "
                  f"average distance {mad_last:.3g} after the last of {n_layers} GAT layers, "
                  f"{ratio:.2g} x its largest value at an earlier layer", 0.7, stage,
                  mad_ratio=ratio)
        explained = True
    inp = first.get("layers", {}).get("input")
    if inp is not None and inp["distinct_graphs"] <= 0.05 and last["score_std"] < 1e-3:
        doc.cause("uninformative_features",
                  f"only {inp['distinct_graphs']:.0%} of probe graph pairs differ in their "
                  f"pooled input features; score std {last['score_std']:.2g}", 0.85, stage,
                  distinct_graphs=inp["distinct_graphs"])
    return explained


def _training_symptoms(doc: Diagnosis, h: Sequence[dict[str, Any]], stage: str,
                       explained: bool) -> None:
    """What the loss and gradients did: vanishing gradients (weaker when ``explained`` by
    another cause), a ranking made worse than random, batches without a valid pair."""
    t = DOCTOR_THRESHOLDS
    first, last = h[0], h[-1]
    gmed = median_grad(h)
    min_loss = min((r["loss"] for r in h if math.isfinite(r["loss"])), default=math.nan)
    if (gmed < t["vanishing_grad_norm"] and math.isfinite(min_loss)
            and min_loss >= t["near_ln2"] * LN2):
        why = ""
        temp = doc.cfg.loss.temperature
        if temp > 10:
            why = f"; loss.temperature={temp:g} divides every score gap by {temp:g}"
        doc.cause("vanishing_gradients",
                  f"median gradient norm {gmed:.3g} (runbook: > {t['vanishing_grad_norm']}) "
                  f"while the loss stays at {min_loss:.4g} = {min_loss / LN2:.3f} x ln 2, "
                  f"the loss of constant scores{why}",
                  0.5 if explained else 0.8, stage, grad_norm_median=gmed,
                  loss_over_ln2=min_loss / LN2)
    if (last["spearman"] < -THRESHOLDS["flag_spearman"] and last["pairwise_accuracy"] < 0.4
            and last["spearman"] < first["spearman"] - 0.3):
        doc.cause("loss_wrong_direction",
                  f"training makes the ranking worse than random: Spearman "
                  f"{last['spearman']:.3f}, pairwise accuracy {last['pairwise_accuracy']:.3f}",
                  0.8, stage, spearman=last["spearman"])
    without = [r.get("batches_without_pairs", 0) for r in h]
    if max(without, default=0) > 0:
        doc.cause("no_valid_pairs", f"up to {max(without)} batch(es) per epoch had no valid "
                  "pair", 0.4, stage)


def _mad_ratio(record: dict[str, Any]) -> tuple[float, float, int] | None:
    """(MAD after the last GAT layer / the largest MAD before it, that last MAD, the number of
    layers) from a probe record's per-layer mean average distances; None without two layers."""
    layers = {k: v for k, v in record.get("layers", {}).items() if k != "input"}
    if len(layers) < 2:
        return None
    mads = [v["mad"] for v in layers.values()]
    top = max(mads[:-1])
    if top <= 0:
        return None
    return mads[-1] / top, mads[-1], len(mads)


def lr_symptom(run: Run, lr: float) -> str:
    """``high``, ``low`` or ``""``: what a failing run at learning rate ``lr`` says about it."""
    h, t = run.history, DOCTOR_THRESHOLDS
    if run.nonfinite or lr > t["lr_high"]:
        return "high"
    if h and any(not math.isfinite(r["loss"]) for r in h):
        return "high"
    if h and h[-1]["loss"] > 1.2 * h[0]["loss"]:
        return "high"
    flat = h and loss_drop(h) < t["flat_loss_drop"]
    if flat and median_grad(h) >= t["vanishing_grad_norm"]:
        return "low"
    if lr < t["lr_low"]:
        return "low"
    return ""


def failure_verdict(run: Run) -> str:
    """The verdict of a run that did not fit: ``unstable`` (non-finite), ``collapsed`` (score
    std under the runbook's red flag) or ``cannot_fit``."""
    if run.nonfinite:
        return "unstable"
    if run.history and run.history[-1]["score_std"] < THRESHOLDS["flag_score_std"]:
        return "collapsed"
    return "cannot_fit"
