"""Ablations: runs that change one suspect setting each; the first that fixes a failing run
confirms its cause, and its fix names the setting to change."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from gatrank.checks.verdict import THRESHOLDS, loss_drop
from gatrank.config import Config
from gatrank.doctor.report import CAUSES, DOCTOR_THRESHOLDS
from gatrank.doctor.runs import train_run
from gatrank.doctor.state import Diagnosis
from gatrank.doctor.symptoms import Run, lr_symptom, median_grad, symptoms

__all__ = [
    "overfit_ablations",
    "user_ablations",
]

_Plan = tuple[str, dict[str, Any], str | None, str]
"""One ablation: (label, config overrides, reference model in place of the user's or None,
the cause id it confirms when it fixes the run)."""


def _confirm(doc: Diagnosis, plans: list[_Plan], base: Callable[..., Config],
             idx: Sequence[int], failed: Run, stage: str, learn: bool) -> bool:
    """Run ablations in order until one fixes the run; that one confirms its cause."""
    for label, overrides, model, cid in plans:
        t0 = doc.begin(f"ablation: {label}")
        run = train_run(doc, label, base(**overrides), idx, stop_on_pass=True, model=model)
        doc.fix_runs[_key(stage, overrides, model)] = run
        fixed = run.passed or (learn and run.learns)
        doc.add_stage(f"ablation: {label}", "fixes" if fixed else "no change",
                      run.summary(), t0)
        if fixed:
            b, a = failed.summary(), run.summary()
            doc.cause(cid, f"{label} fixes it: pairwise accuracy "
                      f"{b.get('pairwise_accuracy', math.nan):.3f} -> "
                      f"{a['pairwise_accuracy']:.3f}, score std "
                      f"{b.get('score_std', math.nan):.3g} -> {a['score_std']:.3g} (before: "
                      f"{failed.problem()})", 0.95, stage,
                      fix=_fix_for(doc, cid, overrides), ablation=label,
                      ablation_change={"config": dict(overrides), "model": model or ""})
            return True
    return False


def _key(stage: str, overrides: dict[str, Any], model: str | None) -> tuple:
    """The run's :meth:`gatrank.doctor.fixes.Fix.key`: the fix that makes the same change is
    verified by this run instead of a new one."""
    base = "your settings" if stage == "your settings" else "overfit"
    return (base, tuple(sorted(overrides.items())), "", (), "", model or "")


def _fix_for(doc: Diagnosis, cid: str, overrides: dict[str, Any]) -> str:
    """The cause's runbook fix, followed by the settings the ablation changed."""
    changes = ", ".join(f"{k}: {_setting(doc.cfg, k)!r} -> {v!r}"
                        for k, v in overrides.items())
    return f"{CAUSES[cid]['fix']} Here: {changes}." if changes else CAUSES[cid]["fix"]


def overfit_ablations(doc: Diagnosis, rb: Run, idx: Sequence[int]) -> None:
    """The overfit test ``rb`` failed: unless a strong cause is already known, try the ablations
    that tell the suspects apart, then GATv2, then a reference model (the linear baseline, or
    gatrank's GAT in place of a user's model)."""
    strong = DOCTOR_THRESHOLDS["strong"]
    plans = _suspect_plans(doc, rb) if doc.strongest() < strong else []
    if _confirm(doc, plans, doc.overfit_cfg, idx, rb, "ablation", learn=False):
        return
    if doc.strongest() >= strong:
        return
    if doc.builtin and doc.cfg.model.conv == "gat" and _gatv2_fits(doc, idx):
        return
    _reference_run(doc, rb, idx)


def _suspect_plans(doc: Diagnosis, rb: Run) -> list[_Plan]:
    """One ablation per suspect the settings and the failed run ``rb`` point to."""
    cfg, mc = doc.cfg, doc.cfg.model
    plans: list[_Plan] = []
    if cfg.training.weight_decay > 0:
        plans.append(("weight decay off", {"training.weight_decay": 0.0}, None,
                      "over_regularized"))
    if doc.builtin and (mc.num_layers > 4 or not mc.residual):
        d = type(mc)()
        plans.append((f"the default depth: {d.num_layers} GAT layers of {d.hidden_dim} "
                      "with residuals",
                      {"model.num_layers": d.num_layers, "model.residual": True,
                       "model.hidden_dim": max(mc.hidden_dim, d.hidden_dim),
                       "model.heads": d.heads}, None, "oversmoothing"))
    if doc.builtin and mc.head in ("sigmoid", "tanh"):
        plans.append(("unbounded score head", {"model.head": "layernorm"}, None,
                      "score_head_saturated"))
    if cfg.loss.temperature > 10:
        plans.append(("loss temperature 1", {"loss.temperature": 1.0}, None,
                      "vanishing_gradients"))
    lr = doc.overfit_cfg().training.learning_rate
    sym = lr_symptom(rb, lr)
    if sym == "high":
        plans.append((f"learning rate {lr / 10:g}", {"training.learning_rate": lr / 10},
                      None, "learning_rate_too_high"))
    elif sym == "low":
        plans.append((f"learning rate {lr * 10:g}", {"training.learning_rate": lr * 10},
                      None, "learning_rate_too_low"))
    return plans


def _gatv2_fits(doc: Diagnosis, idx: Sequence[int]) -> bool:
    """The overfit test with GATv2 in place of GAT; True (and a note) when it passes."""
    t0 = doc.begin("ablation: GATv2")
    run = train_run(doc, "GATv2", doc.overfit_cfg(**{"model.conv": "gatv2"}), idx,
                    stop_on_pass=True)
    doc.fix_runs[_key("ablation", {"model.conv": "gatv2"}, None)] = run
    doc.add_stage("ablation: GATv2", "fixes" if run.passed else "no change",
                  run.summary(), t0)
    if run.passed:
        doc.notes.append("GATv2 (dynamic attention) fits where GAT does not: set "
                         "model.conv: gatv2")
    return run.passed


def _reference_run(doc: Diagnosis, rb: Run, idx: Sequence[int]) -> None:
    """The overfit test with a reference model: the linear baseline for gatrank's GAT, gatrank's
    GAT for a user's model (which names ``insufficient_capacity`` when the GAT fits where the
    user's model learns but plateaus)."""
    reference = "linear" if doc.builtin else "gat"
    label = "the linear baseline" if doc.builtin else "gatrank's GAT in place of your model"
    t0 = doc.begin(f"ablation: {label}")
    run = train_run(doc, label, doc.overfit_cfg(), idx, stop_on_pass=True, model=reference)
    doc.fix_runs[_key("ablation", {}, reference)] = run
    doc.add_stage(f"ablation: {label}", "fits" if run.passed else "cannot fit",
                  run.summary(), t0)
    learning = (bool(rb.history) and loss_drop(rb.history) >= THRESHOLDS["flag_loss_drop"]
                and median_grad(rb.history) >= DOCTOR_THRESHOLDS["vanishing_grad_norm"])
    if run.passed and reference == "gat" and learning:
        last, ref = rb.history[-1], run.history[-1]
        doc.cause("insufficient_capacity",
                  f"your model learns (loss {rb.history[0]['loss']:.4g} -> "
                  f"{last['loss']:.4g}, "
                  f"median gradient norm {median_grad(rb.history):.3g}) but plateaus at "
                  f"pairwise accuracy {last['pairwise_accuracy']:.3f} after {last['epoch']} "
                  "epochs, while gatrank's GATRanker with the same loss and settings fits "
                  f"the same graphs (pairwise accuracy {ref['pairwise_accuracy']:.3f} at "
                  f"epoch {ref['epoch']})", 0.9, "ablation")
    elif run.passed:
        doc.notes.append(f"{label} fits these graphs, so data and loss can be learned: the "
                         "problem is in the model")
    else:
        doc.notes.append(f"{label} cannot fit these graphs either: check the data and the "
                         "loss first")


def user_ablations(doc: Diagnosis, mine: Run, idx: Sequence[int]) -> bool:
    """Your settings failed where the runbook's passed: try the runbook's value of each
    suspect setting. True when a cause was found (confirmed or suspected)."""
    t = DOCTOR_THRESHOLDS
    ours, theirs = doc.cfg.training.learning_rate, doc.overfit_cfg().training.learning_rate
    sym = lr_symptom(mine, ours)
    plans: list[_Plan] = []
    if (sym == "high" and ours > theirs) or (sym == "low" and ours < theirs):
        cid = "learning_rate_too_high" if ours > theirs else "learning_rate_too_low"
        plans.append((f"your settings with learning rate {theirs:g}",
                      {"training.learning_rate": theirs}, None, cid))
    if (doc.cfg.model.dropout >= t["heavy_dropout"]
            or doc.cfg.training.weight_decay >= t["heavy_weight_decay"]):
        plans.append(("your settings without dropout and weight decay",
                      {"model.dropout": 0.0, "training.weight_decay": 0.0}, None,
                      "over_regularized"))
    if doc.opts.ablations and _confirm(doc, plans, doc.user_cfg, idx, mine,
                                       "your settings", learn=True):
        return True
    for _, overrides, _, cid in plans:  # suspected, not confirmed
        yours = ", ".join(f"{k}={_setting(doc.cfg, k)!r}" for k in overrides)
        doc.cause(cid, f"your settings ({yours}) fail where the runbook's pass: "
                  f"{mine.problem()}", 0.5, "your settings")
    if not plans:
        symptoms(doc, mine, "your settings")
    return doc.strongest() >= 0.5


def _setting(cfg: Config, dotted: str) -> Any:
    section, key = dotted.split(".")
    return getattr(getattr(cfg, section), key)
