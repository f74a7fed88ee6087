"""What the notebooks record and print, put together from what their steps return, so that a
notebook cell holds calls, not glue.

Each ``*_results`` function returns the keyword arguments a notebook passes to
:meth:`gatrank.notebook.session.NotebookRun.record` beside its checks; they become keys of
``<run_dir>/<notebook>.results.json``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from gatrank.checks.margins import margin_sentence
from gatrank.checks.steps import check
from gatrank.checks.verdict import Check, Verdict
from gatrank.doctor import DoctorReport
from gatrank.evaluate import EvalResult
from gatrank.training import TrainResult

__all__ = [
    "OVERFIT_METRICS",
    "check_dicts",
    "init_loss_metrics",
    "overfit_results",
    "fix_rows",
    "training_outcome",
    "baseline_table",
    "checkpoint_check",
    "full_train_results",
    "eval_results",
]

OVERFIT_METRICS: tuple[str, ...] = (
    "loss", "pairwise_accuracy", "spearman", "kendall", "score_mean", "score_std", "grad_norm",
    "emb_mean", "emb_std", "emb_graph_std",
)
"""The last logged epoch's measurements 03_overfit records (those the history has)."""


def check_dicts(checks: Iterable[Mapping[str, Any] | Check]) -> list[Mapping[str, Any]]:
    """Checks as dicts ``{name, kind, rule, value, ok[, detail]}``: a mapping as it is, a
    :class:`~gatrank.checks.verdict.Check` of a verdict as its fields."""
    return [c if isinstance(c, Mapping) else c.to_dict() for c in checks]


def init_loss_metrics(init: pd.DataFrame) -> dict[str, Any]:
    """02_loss_tests' metrics from :func:`~gatrank.checks.steps.init_loss_per_batch`: the mean
    loss and mean score std of the untrained model over batches, and the fewest valid pairs in
    a batch."""
    return {"init_loss_mean": init["loss"].mean(),
            "init_score_std_mean": init["score_std"].mean(),
            "init_pairs_min": init["num_pairs"].min()}


def overfit_results(result: TrainResult, verdict: Verdict, reading: DoctorReport, *,
                    n: int, fixes: DoctorReport | None = None) -> dict[str, Any]:
    """03_overfit's record: the verdict, the final metrics (:data:`OVERFIT_METRICS`), ``n``,
    epochs run, training time, the doctor's causes read from the history (most likely first),
    ``fixes``: one row per cause of the verifying doctor ``fixes`` whose fix it verified or
    judged (:func:`fix_rows`; empty without it); and
    ``read_from``, the log judged, when nothing was trained."""
    final = result.summary["final"]
    return {
        "verdict": verdict.to_dict(),
        "metrics": {k: final[k] for k in OVERFIT_METRICS if k in final},
        "n": n,
        "epochs_run": result.summary["epochs_run"],
        "train_time_s": result.summary["wall_time_s"],
        "causes": [c.to_dict() for c in reading.causes],
        "fixes": fix_rows(fixes) if fixes is not None else [],
        **_read_from(result.summary),
    }


def fix_rows(report: Any) -> list[dict[str, Any]]:
    """One row per cause whose fix was tried or judged: cause, result (verified, not enough,
    needs you...), the change, the epoch the test passed and the measured values."""
    words = {"verified": "verified", "not_enough": "not enough alone", "human": "needs you",
             "consequence": "follows from another cause", "not_applicable": "not tried"}
    rows = []
    for c in report.causes:
        rec = c.verification
        if not rec:
            continue
        fix = rec.get("fix", {})
        rows.append({"cause": c.id, "status": rec["status"], "result": words[rec["status"]],
                     "fix": fix.get("human") or fix.get("label", "") if rec["status"] in (
                         "human", "consequence") else fix.get("label", ""),
                     "epoch": rec.get("epoch"), "pairwise_accuracy": rec.get("pairwise_accuracy"),
                     "spearman": rec.get("spearman"), "score_std": rec.get("score_std")})
    return rows


def _read_from(summary: Mapping[str, Any]) -> dict[str, Any]:
    """``{"read_from": log}`` for a run read from its log (the ``metrics`` parameter), else
    nothing: a notebook that trained records what it recorded before."""
    return {"read_from": summary["source"]} if "source" in summary else {}


def training_outcome(summary: Mapping[str, Any]) -> str:
    """One line on a full training run: why it stopped, its best epoch with the validation
    Spearman there, and the split sizes (a run read from its log: where it was read)."""
    best = summary["best_val_spearman"]
    line = (f"{summary['stop_reason'] or 'ran all epochs'}; best epoch {summary['best_epoch']} "
            + (f"(validation Spearman {best:.4f})" if best is not None else "(no validation)")
            + f"; splits {summary['split_sizes']}")
    return f"read from {summary['source']}: {line}" if "source" in summary else line


def baseline_table(summary: Mapping[str, Any]) -> pd.DataFrame:
    """Test metrics of the model and of the baselines fitted beside it (rows ``model`` and
    ``<name> baseline``; a summary of ``train(..., with_baseline=True)``), with the model's
    Spearman lead over each and its 95% bootstrap interval. A row the summary lacks (a run read
    from a log alone, a baseline skipped for want of SMILES) is left out."""
    rows = {"model": dict(summary.get("test") or {})}
    fitted = summary.get("baselines")
    if fitted is None and (summary.get("baseline") or {}).get("test"):  # an older summary
        fitted = {"linear": summary["baseline"]}
    for name, b in (fitted or {}).items():
        if b.get("test"):
            m = b.get("margin") or {}
            rows[f"{name} baseline"] = {**b["test"], **({
                "model lead": m["difference"], "lead 95% low": m["low"],
                "lead 95% high": m["high"]} if m else {})}
    return pd.DataFrame({k: v for k, v in rows.items() if v}).T


def checkpoint_check(checkpoint: Path, *, required: bool = True) -> dict[str, Any]:
    """The best checkpoint 05_eval scores exists: a pass check, or a warning when not
    ``required`` (a run read from its log, which may have saved none)."""
    return check("checkpoint_saved", "pass" if required else "warning",
                 "best checkpoint saved for 05_eval", None, checkpoint.is_file(), str(checkpoint))


def full_train_results(result: TrainResult, checkpoint: Path) -> dict[str, Any]:
    """04_full_train's record: the checkpoint, best epoch and its validation Spearman, epochs
    run, why training stopped, its time, the test metrics of the model and of the linear
    baseline, and the split sizes."""
    summary = result.summary
    return {
        "checkpoint": checkpoint,
        "best_epoch": summary["best_epoch"],
        "best_val_spearman": summary["best_val_spearman"],
        "epochs_run": summary["epochs_run"],
        "stop_reason": summary["stop_reason"],
        "train_time_s": summary["wall_time_s"],
        "metrics": summary.get("test", {}),
        "baseline": (summary.get("baseline") or {}).get("test", {}),
        "split_sizes": summary["split_sizes"],
        **_read_from(summary),
    }


def margins_table(res: EvalResult) -> pd.DataFrame:
    """The model against each fitted baseline on the split scored: both Spearmans, the
    difference with its paired bootstrap interval, what it means, and how the baseline was
    fitted; one row per baseline (a skipped one says why)."""
    rows = {}
    for name, fit in res.baseline_fits.items():
        m = res.margins.get(name)
        if m is None:
            rows[name] = {"meaning": f"skipped: {fit.get('skipped', '')}"}
            continue
        rows[name] = {"model spearman": res.metrics["spearman"],
                      "baseline spearman": res.baselines[name]["spearman"],
                      "difference": m["difference"], "95% low": m["low"], "95% high": m["high"],
                      "meaning": margin_sentence(name, m).split(" (")[0],
                      "fitted": fit.get("model", "")}
    return pd.DataFrame.from_dict(rows, orient="index")


def eval_results(res: EvalResult, *, checkpoint: Path, source: str) -> dict[str, Any]:
    """05_eval's record: the model's and the baselines' metrics on the split scored, the split,
    the checkpoint and where it came from (:func:`~gatrank.notebook.session.checkpoint_for_eval`),
    and the mean of the per-group metrics (None without groups)."""
    return {
        "metrics": res.metrics,
        "baselines": res.baselines,
        "baseline_fits": res.baseline_fits,
        "margins": res.margins,
        "split": res.split,
        "checkpoint": checkpoint,
        "checkpoint_source": source,
        "grouped_mean": (res.grouped or {}).get("mean"),
    }
