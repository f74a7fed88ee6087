"""The collapse doctor: runs the runbook's checks end to end and names the likely causes.

Stages, in order, stopping as soon as the answer is clear:

1. **data**: every manifest (or dataset) problem (or, for graphs in memory, NaN/Inf and empty
   graphs);
   targets that do not vary; valid pairs under the configured ``tie_eps``/``margin_eps`` and
   batch size; node features that cannot tell graphs apart.
2. **loss**: the runbook's loss tests on synthetic scores: a gradient reaches the scores, the
   right order costs less than the reverse.
3. **model**: frozen parameters and the gradient path from the loss to every parameter.
4. **overfit**: the runbook's overfit test (first ``n`` training graphs, up to 500 epochs, lr
   5e-3, no dropout, full batch) on the user's model, loss and remaining settings, with
   :class:`~gatrank.checks.probes.ModelProbe` measurements at every logged epoch.
5. **your settings**: the same graphs with the user's own training settings, beside it.
6. **ablations**, only the ones that tell the remaining suspects apart: weight decay off, a
   shallower GAT with residuals, an unbounded score head, loss temperature 1, a lower or higher
   learning rate, your settings with the runbook's learning rate or without regularization,
   GATv2, the linear baseline (gatrank's GAT in place of a user's own model).
7. **held-out**: the user's settings on more training graphs, scored on graphs it never saw
   (a permutation test against chance).
8. **verify**: the fix of each of the top three causes applied alone, and the overfit test
   re-run with it (:mod:`~gatrank.doctor.verify`): "this change makes your model learn", with
   the numbers, or "this change alone is not enough"; a fix only a human can make says so.

:func:`diagnose` returns a :class:`DoctorReport`: a verdict and causes ranked most likely
first, each with the measured evidence and the runbook's fix. :func:`diagnose_history` gives
the history-only part cheaply for a run that already happened (a notebook's overfit run).

This module loads the graphs and orders the stages (:func:`_run_stages`); the stages live in
:mod:`~gatrank.doctor.data_stage` and :mod:`~gatrank.doctor.stages`, the reading of a run in
:mod:`~gatrank.doctor.symptoms`, the
ablations in :mod:`~gatrank.doctor.ablations`, and the state they share in
:mod:`~gatrank.doctor.state`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from gatrank.checks.static import check_graphs
from gatrank.checks.verdict import (
    THRESHOLDS,
    TRAINING,
    evaluate_run,
    evaluate_training,
    judgement,
)
from gatrank.config import Config, file_keys, load_config, settings_set
from gatrank.doctor.ablations import overfit_ablations, user_ablations
from gatrank.doctor.data_stage import data_stage
from gatrank.doctor.faults import Fault
from gatrank.doctor.faults import inject as inject_fault
from gatrank.doctor.inputs import load_inputs
from gatrank.doctor.loop_causes import demote_symptoms, eval_mode_note, loop_causes
from gatrank.doctor.report import CAUSES, DOCTOR_THRESHOLDS, DoctorOptions, DoctorReport
from gatrank.doctor.runs import train_run
from gatrank.doctor.stages import heldout_stage, loss_stage, model_stage
from gatrank.doctor.state import Diagnosis
from gatrank.doctor.symptoms import (
    Run,
    failure_verdict,
    lr_symptom,
    median_grad,
    still_learning,
    symptoms,
)
from gatrank.doctor.trace import signal_trace
from gatrank.doctor.usercode import UserFrame, user_files, user_frame
from gatrank.doctor.verify import verify_fixes
from gatrank.model import ScoreShapeError
from gatrank.runtime import torch_threads

__all__ = [
    "diagnose",
    "diagnose_history",
]


def _run_stages(doc: Diagnosis, problems: Sequence, dropped: Sequence) -> str:
    """Run the stages in order, stopping as soon as the answer is clear; the verdict."""
    # static checks: data, loss, model
    if data_stage(doc, problems, dropped):
        return "bad_data"
    if loss_stage(doc):
        return "broken_loss"
    idx = doc.train_split()[: doc.opts.n]
    if model_stage(doc, idx):
        return "broken_loss" if "loss_detached" in doc.causes else "cannot_fit"
    # the runbook's overfit test, given its 500 epochs while it learns; when it fails, its
    # symptoms and ablations name the cause
    t0 = doc.begin("overfit")
    trained: list[nn.Module] = []
    rb = train_run(doc, "overfit", doc.overfit_cfg(), idx, stop_on_pass=True, keep=trained,
                   patient=True)
    doc.overfit_run = rb
    doc.runbook_verdict = rb.verdict.to_dict() if rb.verdict else None
    summary = {"graphs": len(idx), **rb.summary()}
    if rb.dropout_off:
        summary["dropout_off"] = len(rb.dropout_off)
    doc.add_stage("overfit", "passed" if rb.passed else "failed", summary, t0)
    _overfit_notes(doc, rb)
    if not rb.passed:
        if trained and doc.trace_batch is not None:
            doc.traces["end"] = signal_trace(trained[-1], doc.trace_batch)
        symptoms(doc, rb, "overfit")
        if doc.opts.ablations:
            overfit_ablations(doc, rb, idx)
        if not doc.causes:
            doc.notes.append(
                "no known cause matched the measurements; the runbook's advice for a model "
                "that does not fit: check the loss is decreasing and gradients exist, then "
                "increase model capacity or the learning rate")
        return failure_verdict(rb)
    verdict = _your_settings(doc, idx)
    if verdict:
        return verdict
    # generalization
    if doc.opts.heldout:
        return heldout_stage(doc)
    return "healthy"


def _overfit_notes(doc: Diagnosis, rb: Run) -> None:
    """What the report says of the overfit run besides its verdict: the dropout it switched off
    inside the model, and runbook checks that failed only for the loss's scale."""
    for site in rb.dropout_off:
        doc.notes.append(_dropout_line(site))
    reading = rb.reading
    if rb.passed and reading.explained:
        doc.notes.append(f"overfit test: {reading.note()}")


def _dropout_line(site: Mapping[str, Any]) -> str:
    """``dropout 0.5 in mlp (MLP): off for the overfit test`` for a site the overfit test
    switched off (its ``text`` when the training loop wrote one)."""
    if site.get("text"):
        return str(site["text"])
    where = site.get("module") or site.get("module_type") or "the model"
    return f"dropout {site.get('p', '?')} in {where}: off for the overfit test"


def _your_settings(doc: Diagnosis, idx: Sequence[int]) -> str | None:
    """The user's own training settings on the overfit graphs, when they set any that differ
    from the runbook's recommended config (which is never a cause); a verdict when they fail
    and a cause is found, else None. A run still learning when the doctor's budget ends, while
    the user trains for longer, is a note with its trend, not a failure."""
    own = doc.own_settings()
    if not own:
        return None
    t0 = doc.begin("your settings")
    mine = train_run(doc, "your settings", doc.user_cfg(), idx, stop_on_pass=True)
    ok = mine.passed or mine.learns
    budget, epochs = doc.opts.user_epochs, doc.cfg.training.epochs
    # still learning: at its rate the run reaches 0.9 within the epochs you train beyond ours
    slow = None if ok or epochs <= budget else still_learning(mine.history, epochs - budget)
    status = "learns" if ok else ("still learning" if slow else "failed")
    doc.add_stage("your_settings", status, {"graphs": len(idx), **mine.summary()}, t0)
    set_ = ", ".join(f"{k} {_fmt_value(v)}" for k, v in own.items())
    if slow:
        doc.notes.append(
            f"your settings ({set_}) learn the overfit graphs more slowly than the runbook's: "
            f"pairwise accuracy {slow['from']:.3f} -> {slow['to']:.3f} over epochs "
            f"{slow['epochs'][0]}-{slow['epochs'][1]} ({slow['slope']:+.4f} per epoch), still "
            f"rising when the doctor's {budget} epochs ended; at that rate 0.9 in about "
            f"{slow['to_pass']:.0f} more epochs, within the {epochs} you train for")
        return None
    if not ok:
        if user_ablations(doc, mine, idx):
            return failure_verdict(mine)
        doc.notes.append(f"with your settings ({set_}) the overfit subset is learned more "
                         f"slowly than with the runbook's ({mine.problem()})")
    return None


def _fmt_value(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _run_reported(doc: Diagnosis, problems: Sequence, dropped: Sequence) -> str:
    """:func:`_run_stages`, ending in a report whatever the user's code does: scores that are
    not one per graph become ``score_shape_mismatch`` and an exception raised in the user's
    model or loss ``user_code_error``, each with the stage it happened in (an exception that
    never passed through the user's code is gatrank's own bug and propagates)."""
    try:
        return _run_stages(doc, problems, dropped)
    except ScoreShapeError as exc:
        _shape_cause(doc, exc)
        return "cannot_fit"
    except Exception as exc:
        frame = user_frame(exc, user_files(doc.model, doc.loss))
        if frame is None:
            raise
        return _user_error(doc, exc, frame)


def _shape_cause(doc: Diagnosis, exc: ScoreShapeError) -> None:
    """``score_shape_mismatch`` from the error of a model whose scores are not one per graph,
    caught where its output is first read, before any loss sees it."""
    measured = {"score_shape": str(exc.shape), "graphs": exc.num_graphs,
                "nodes": exc.num_nodes}
    said = str(exc)
    evidence = said[: len(said) - len(exc.meaning)].strip() if exc.meaning else said
    doc.cause("score_shape_mismatch", f"in the {doc.stage} stage the {evidence}", 1.0,
              doc.stage, fix=exc.meaning or "", **measured)
    doc.add_stage(doc.stage, "failed", measured, doc.stage_t0)


def _user_error(doc: Diagnosis, exc: Exception, frame: UserFrame) -> str:
    """``user_code_error`` for an exception raised in the user's code at ``frame``; the
    verdict: ``broken_loss`` when the frame is the loss's, else ``cannot_fit``."""
    from gatrank.model_hints import embedding_hint  # an Embedding fed gatrank's float features

    in_loss = frame.file in user_files(doc.loss)
    what = "loss" if in_loss else "model"
    # the hint score_batch added, or (a forward outside score_batch: the signal trace) this one
    hint = getattr(exc, "gatrank_hint", None) or (
        embedding_hint(exc, doc.gs[0].x) if doc.gs is not None and len(doc.gs) else None)
    message = " ".join(str(exc).split())
    message = message if len(message) <= 300 else message[:297] + "..."
    said = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    doc.cause("user_code_error", f"your {what} raised {said} in the {doc.stage} stage, at "
              f"{frame}", 1.0, doc.stage,
              fix=f"In {frame.file}, line {frame.line} ({frame.function}): "
                  f"{hint or CAUSES['user_code_error']['fix']}",
              exception=type(exc).__name__, frame=frame.to_dict(), in_stage=doc.stage)
    doc.add_stage(doc.stage, "failed", {"error": said}, doc.stage_t0)
    return "broken_loss" if in_loss else "cannot_fit"


def _config_diff(doc: Diagnosis) -> list[dict[str, Any]]:
    """Your settings beside the runbook's overfit test: only the keys you set (gatrank's
    defaults are not yours), ``model.dropout`` for gatrank's own GAT only, and for any model
    the dropout the overfit test found and switched off inside it."""
    r = doc.overfit_cfg().to_dict()
    keys = ["training.learning_rate", "training.batch_size", "training.epochs",
            "training.weight_decay", "training.grad_clip"]
    keys += ["model.dropout"] if doc.builtin else []
    out = []
    for key in keys:
        sec, name = key.split(".")
        if key in doc.user_set and doc.user_set[key] != r[sec][name]:
            out.append({"key": key, "yours": doc.user_set[key], "runbook": r[sec][name]})
    run = doc.overfit_run
    for site in (run.dropout_off if run is not None else []):
        where = site.get("module") or site.get("module_type") or "your model's forward"
        out.append({"key": f"dropout in {where}", "yours": site.get("p"),
                    "runbook": "off for the overfit test"})
    return out


def _setup(source: str, gs, model, loss, seed: int, fault: Fault | None) -> dict[str, Any]:
    """What was diagnosed, for the report: where the graphs came from, how many, the model and
    loss by name, the seed and the fault injected."""
    return {"source": source, "graphs": len(gs) if gs is not None else 0,
            "model": model if isinstance(model, str) and model else
            ("gat" if model is None else getattr(model, "__name__", type(model).__name__)),
            "loss": loss if isinstance(loss, str) and loss else
            ("pairwise_rank_loss" if loss is None else getattr(loss, "__name__", "custom")),
            "seed": seed, "fault": fault.name if fault else None}


def diagnose(
    graphs=None,
    *,
    manifest: str | Path | None = None,
    dataset: str | None = None,
    config: Config | str | Path | None = None,
    model: str | Callable[[int], nn.Module] | nn.Module | None = None,
    loss: str | Callable | None = None,
    inject: str | None = None,
    options: DoctorOptions | None = None,
    seed: int | None = None,
) -> DoctorReport:
    """Diagnose why a ranking model collapses: run the stages and rank the causes.

    Args:
        graphs: graphs already in memory: a :class:`gatrank.data.GraphSet`, or a list of
            ``Data``, a PyG ``Dataset``, a ``DataLoader`` (anything
            :func:`gatrank.data.sources.graph_source` takes; checked graph by graph as a
            ``dataset`` is); default: load ``manifest``.
        manifest: manifest.csv; default ``config.data.manifest`` or the embedded default.
        dataset: a PyG dataset instead (``package.module:name`` or a ``.pt`` file; see
            :mod:`gatrank.data.pyg_dataset`); default ``config.data.dataset``.
        config: a :class:`~gatrank.config.Config` or a YAML path (default: the defaults).
        model: ``None``/``"gat"`` for gatrank's GATRanker, ``"linear"``, an import string
            ``package.module:Name``, a factory ``in_channels -> nn.Module`` or a module (copied
            for every run).
        loss: the user's loss ``(scores, targets) -> scalar`` (import string or callable).
        inject: a fault of :mod:`gatrank.doctor.faults` to inject first (for demonstration).
        options: run budgets; :class:`DoctorOptions` defaults.
        seed: overrides ``training.seed`` (runs are seeded and deterministic on CPU).

    Returns:
        A :class:`DoctorReport`; ``report.causes`` is empty when the verdict is healthy.
    """
    opts = options or DoctorOptions()
    t_start = time.perf_counter()
    cfg = config if isinstance(config, Config) else load_config(config or None)
    keys = file_keys(config) if isinstance(config, (str, Path)) and config else []
    seed = cfg.training.seed if seed is None else seed
    threads = opts.num_threads if opts.num_threads is not None else cfg.training.cpu_threads
    with torch_threads(threads):
        gs, problems, dropped, source = load_inputs(graphs, manifest, dataset, cfg)
        model_edit = None
        fault = None
        if inject:
            if gs is None:
                raise ValueError(f"cannot inject {inject!r}: the data {source} has problems; "
                                 "run without --inject or fix the data first")
            inj = inject_fault(inject, gs, cfg, loss, seed=seed)
            gs, cfg, loss, model_edit, fault = (inj.graphs, inj.config, inj.loss,
                                                inj.model_edit, inj.fault)
            model = inj.model or model
            problems = check_graphs(gs.graphs)
        doc = Diagnosis(gs, cfg, model, loss, model_edit, opts, seed,
                        user_set=settings_set(cfg, keys))
        verdict = _run_reported(doc, problems, dropped)
        if opts.verify and verdict != "healthy" and doc.causes:
            verify_fixes(doc, doc.ranked())
        causes = doc.ranked()
        if verdict == "healthy" and causes:
            doc.notes += [f"possible issue that did not stop training here: {c.id}: {c.evidence}"
                          for c in causes]
            causes = []
    setup = _setup(source, gs, model, loss, seed, fault)
    return DoctorReport(verdict=verdict, causes=causes, stages=doc.stages, notes=doc.notes,
                        config_diff=_config_diff(doc),
                        runbook_verdict=doc.runbook_verdict, setup=setup,
                        seconds=time.perf_counter() - t_start, traces=dict(doc.traces),
                        config=doc.cfg.to_dict())


def _over_regularized(doc: Diagnosis, cfg: Config, *, user_loop: bool) -> None:
    """Heavy dropout or weight decay on a run that failed. In a user's loop (a Monitor's
    findings) the weight decay is the optimizer's own and the model's dropout is not known:
    a heavy decay there is the mechanism, and the small gradients it brings a symptom."""
    wd, heavy = cfg.training.weight_decay, DOCTOR_THRESHOLDS["heavy_weight_decay"]
    if user_loop:
        if wd >= heavy:
            doc.cause("over_regularized", f"the optimizer's weight decay is {wd:g} "
                      f"(heavy from {heavy:g}): each step pulls every weight toward 0 by "
                      f"{wd:g} x the weight, which outweighs a ranking loss's gradient",
                      0.85, "history",
                      fix="Set the optimizer's weight_decay to 0, as the runbook's config does "
                          "(training.weight_decay: 0.0); to regularize later, start near 1e-5 "
                          "(AdamW decouples the decay from the gradient).")
            demote_symptoms(doc, ["over_regularized"])
        return
    if cfg.model.dropout >= DOCTOR_THRESHOLDS["heavy_dropout"] or wd >= heavy:
        doc.cause("over_regularized", f"dropout {cfg.model.dropout:g}, weight decay "
                  f"{wd:g}", 0.5, "history")


def _loop_reading(doc: Diagnosis, loop: Mapping[str, Any] | None,
                  history: Sequence[dict[str, Any]], verdict: Any, status: str, *,
                  failed: bool) -> str:
    """The loop's mechanics a Monitor watched (:mod:`~gatrank.doctor.loop_causes`), then the
    trend of a failed run that still learns: the status they give the reading."""
    raised = loop_causes(doc, loop, history, failed=failed) if loop else []
    if raised:
        demote_symptoms(doc, raised)
        status = "broken_loop"
        if not failed:
            doc.notes.append("the runbook's verdict passes, but on a run the loop did not mean "
                             "to make: see the causes")
    note = eval_mode_note(loop) if loop else None
    if note:
        doc.notes.append(note)
    if (status in ("cannot_fit", "collapsed") and verdict.trend
            and doc.strongest() < DOCTOR_THRESHOLDS["strong"]):
        # still learning when it ended: what the measurements suggest is a note, not a cause
        doc.notes.insert(0, verdict.still_learning)
        doc.notes += [f"possible issue while it learns: {c.id}: {c.evidence}"
                      for c in doc.ranked()]
        doc.causes.clear()
        status = "still_learning"
    return status


def diagnose_history(history: Sequence[dict[str, Any]], *, config: Config | None = None,
                     findings: Mapping[str, Any] | None = None,
                     graphs_per_epoch: int | None = None) -> DoctorReport:
    """The doctor's reading of a run that already happened (no training, milliseconds).

    Applies the runbook's verdict and the measurement rules of :func:`diagnose` to logged
    records (``train(...).history`` or ``metrics.jsonl``; records with
    :class:`~gatrank.checks.probes.ModelProbe` keys give more evidence). Without the static
    checks and ablations causes are *suspected*: scores stay below those of :func:`diagnose`.

    Args:
        findings: what a :class:`gatrank.Monitor` saw in the loop, read as the model stage's
            results: ``frozen`` (:func:`~gatrank.checks.static.frozen_parameters` with the
            loop's optimizer), ``unused`` (trainable parameters whose gradient was always
            None), ``numel`` (parameter name -> size) and ``nonfinite`` (the steps with a
            NaN/Inf loss, first first). On a healthy run what they show becomes notes.
        graphs_per_epoch: the graphs one epoch trained on. Over
            :data:`~gatrank.checks.verdict.OVERFIT_MAX_GRAPHS` the run is judged as training
            (:func:`~gatrank.checks.verdict.evaluate_training`, named in a note); default: by
            the overfit test's thresholds.
    """
    if not history:
        raise ValueError("diagnose_history needs at least one logged record; train with "
                         "log_every small enough to log an epoch")
    t0 = time.perf_counter()
    cfg = config or Config()
    doc = Diagnosis(None, cfg, None, None, None, DoctorOptions(), cfg.training.seed)
    run = Run("history", list(history))
    run.nonfinite = any(not math.isfinite(r["loss"]) or r.get("skipped_steps", 0) > 0
                        or r.get("nonfinite_steps", 0) > 0 for r in history)
    if findings:
        doc.static = {"frozen": findings["frozen"], "path": None, "numel": findings["numel"],
                      "unused": list(findings.get("unused", ()))}
        if findings.get("nonfinite"):
            run.nonfinite = True
            run.error = f"non-finite loss at {findings['nonfinite'][0]}"
    training = judgement(graphs_per_epoch) == TRAINING
    verdict = evaluate_run(history, graphs_per_epoch=graphs_per_epoch)
    if training:
        doc.notes.append(verdict.thresholds)
    last = history[-1]
    val = [r["val_spearman"] for r in history if "val_spearman" in r]
    # validation Spearman at chance: at the end of an overfit test; never above it (not even at
    # the best epoch, whose checkpoint a training run keeps) in a training run
    if training:
        at_chance = bool(val) and max(val) <= THRESHOLDS["flag_spearman"]
    else:
        at_chance = "val_spearman" in last and last["val_spearman"] <= THRESHOLDS["flag_spearman"]
    # a training run is judged on validation, so one at chance there fails its verdict; if its
    # training metrics pass Step 3 it memorizes without generalizing (no_signal below), which
    # is not a model that cannot fit
    fits = verdict.passed or (training and at_chance and evaluate_training(
        history, graphs_per_epoch=graphs_per_epoch, validation=False).passed)
    failed = not fits or run.nonfinite
    status = "healthy"
    if failed:
        symptoms(doc, run, "history")
        # the learning rate the run logged (a user's loop, a scheduler), else the config's
        lr = float(last.get("lr", cfg.training.learning_rate))
        sym = lr_symptom(run, lr)
        if sym:
            cid = "learning_rate_too_high" if sym == "high" else "learning_rate_too_low"
            doc.cause(cid, f"loss {history[0]['loss']:.4g} -> {last['loss']:.4g} over "
                      f"{last['epoch']} epochs with median gradient norm "
                      f"{median_grad(history):.3g} at learning rate "
                      f"{lr:g}", 0.5, "history")
        _over_regularized(doc, cfg, user_loop=findings is not None)
        status = failure_verdict(run)
    elif at_chance:
        doc.cause("no_signal", f"training Spearman {last['spearman']:.3f} but validation "
                  f"Spearman {val[-1]:.3f}", 0.6, "history")
        status = "no_generalization"
    elif findings:
        symptoms(doc, run, "history")
        doc.notes += [f"possible issue that did not stop training here: {c.id}: {c.evidence}"
                      for c in doc.ranked()]
    status = _loop_reading(doc, (findings or {}).get("loop"), history, verdict, status,
                           failed=failed)
    doc.add_stage("history", "passed" if verdict.passed else "failed",
                  {"records": len(history), **run.summary()}, t0)
    return DoctorReport(verdict=status, causes=doc.ranked() if status != "healthy" else [],
                        stages=doc.stages, notes=doc.notes,
                        runbook_verdict=verdict.to_dict(), setup={"source": "history"},
                        seconds=time.perf_counter() - t0)
