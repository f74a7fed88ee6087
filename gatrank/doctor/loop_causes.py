"""The causes a user's training loop shows in its mechanics: what
:class:`~gatrank.training.loop_watch.LoopWatch` saw, read into cause ids with the numbers and the
line to change.

Four are bugs whatever the verdict says, because the run is not the run the loop means:
``optimizer_not_stepping``, ``gradients_accumulate``, ``same_batch`` (a run that memorises one
batch passes its verdict) and ``targets_misaligned``. Two are magnitudes that only matter when
the run failed: ``lr_schedule_collapse`` (a OneCycleLR stepped per batch ends at a tiny learning
rate too, after learning) and ``gradients_clipped_away`` (clipping at 1.0 makes gradients
smaller in every healthy run that uses it). Each is raised only from a count that a correct
loop cannot produce, so a healthy loop gets none.

``loss_detached`` is read here too, from the autograd state of what the loop passed, and raised
whatever the verdict. A symptom they explain (``learning_rate_too_low``, ``learning_rate_too_high``,
``vanishing_gradients``, ``exploding_gradients``) is kept below them: :func:`demote_symptoms`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from gatrank.doctor.state import Diagnosis

__all__ = ["LOOP_CAUSES", "SYMPTOMS", "loop_causes", "demote_symptoms", "eval_mode_note"]

LOOP_CAUSES = ("loss_detached", "optimizer_not_stepping", "gradients_accumulate", "same_batch",
               "targets_misaligned", "lr_schedule_collapse", "gradients_clipped_away")
"""Every cause id :func:`loop_causes` raises."""

SYMPTOMS = ("learning_rate_too_low", "learning_rate_too_high", "vanishing_gradients",
            "exploding_gradients")
"""Causes that name what a loop bug looks like rather than where it is."""

SYMPTOM_CAP = 0.45
"""The most a symptom scores once a loop cause explains it."""

MIN_CHECKED = 3
"""Watched steps (or optimizer steps) needed before a count names a cause."""

COLLAPSED_SHARE = 0.5
"""Share of optimizer steps at a collapsed learning rate (below 1% of the peak so far) that
makes the schedule the cause: a OneCycleLR spends ~5% of its steps there."""

CLIPPED_RATIO = 100.0
"""Backward's gradient norm over the one the optimizer stepped with, at least..."""

CLIPPED_NORM = 1e-3
"""...with the stepped norm below this (an AMP GradScaler's unscaling divides by 65536 too, but
leaves gradients of normal size)."""


def _g(v: float | None) -> str:
    return "?" if v is None else f"{v:.3g}"


def loop_causes(doc: Diagnosis, loop: Mapping[str, Any], history: Sequence[Mapping[str, Any]],
                *, failed: bool, stage: str = "history") -> list[str]:
    """Raise the loop causes ``loop`` (a :meth:`LoopWatch.summary`) shows; ``failed``: the run
    did not pass its verdict (the magnitude causes need it). Returns the ids raised."""
    raised: list[str] = []
    for rule in (_detached, _not_stepping, _accumulate, _same_batch, _misaligned):
        cid = rule(doc, loop, history, stage)
        if cid:
            raised.append(cid)
    if failed:
        for rule in (_schedule, _clipped):
            cid = rule(doc, loop, history, stage)
            if cid:
                raised.append(cid)
    return raised


def demote_symptoms(doc: Diagnosis, raised: Sequence[str]) -> None:
    """Keep the symptom causes below the loop causes that explain them: a loss cut off from
    the model also explains parameters that never got a gradient (``frozen_parameters`` of
    unused parameters only, none frozen or left out of the optimizer)."""
    if not raised:
        return
    symptoms = list(SYMPTOMS)
    frozen = doc.static.get("frozen") or {}
    if "loss_detached" in raised and not frozen.get("frozen") \
            and not frozen.get("not_in_optimizer"):
        symptoms.append("frozen_parameters")
    for cid in symptoms:
        c = doc.causes.get(cid)
        if c is not None and c.score > SYMPTOM_CAP:
            c.score = SYMPTOM_CAP
            c.evidence += f" (a symptom of {raised[0]})"


def eval_mode_note(loop: Mapping[str, Any]) -> str | None:
    """A note when the model was in eval mode at most of the loop's steps."""
    mode = loop.get("mode") or {}
    steps, ev = mode.get("steps", 0), mode.get("eval_steps", 0)
    if steps >= MIN_CHECKED and ev * 2 >= steps:
        return (f"the model was in eval mode at {ev} of {steps} training steps: dropout is off "
                "and batch norm uses its running statistics while it trains. Call "
                "model.train() at the start of each epoch (after validation's model.eval()).")
    return None


def _per_epoch(loop: Mapping[str, Any], key: str) -> str:
    """A per-epoch count of ``loop`` (its ``[min, max]``) in words: the number where every
    epoch had the same, else "several"."""
    spread = loop.get(key) or []
    return f"{spread[0]}" if spread and spread[0] == spread[-1] else "several"


def _moved(history: Sequence[Mapping[str, Any]]) -> bool | None:
    """Whether the weights moved between records (``update_ratio``), None when not measured."""
    ratios = [r.get("update_ratio") for r in history[1:]]
    ratios = [r for r in ratios if r is not None]
    if not ratios:
        return None
    return any(r > 0 for r in ratios)


def _detached(doc: Diagnosis, loop: Mapping[str, Any], history: Sequence[Mapping[str, Any]],
              stage: str) -> str | None:
    steps = loop.get("steps", 0)
    a = loop.get("autograd") or {}
    leaf, no_graph = a.get("leaf_loss_steps", 0), a.get("scores_without_graph", 0)
    unused = set(doc.static.get("unused") or ())
    frozen = set((doc.static.get("frozen") or {}).get("frozen") or ())
    trainable = [n for n in doc.static.get("numel") or {} if n not in frozen]
    # only where no parameter ever got a gradient: a loop may pass detached scores or a float
    # loss to monitor.step while training through the real ones
    if steps < MIN_CHECKED or not trainable or not unused.issuperset(trainable):
        return None
    if no_graph * 2 >= steps:
        how = (f"the scores passed to monitor.step have requires_grad=False in {no_graph} of "
               f"{steps} steps: the forward ran under torch.no_grad() (or its output was "
               "detached)" + (", and the loss was then made to require grad by hand"
                              if leaf * 2 >= steps else ""))
    elif leaf * 2 >= steps:
        how = (f"the loss passed to monitor.step requires grad but has no grad_fn in {leaf} of "
               f"{steps} steps: it was rebuilt from a number (torch.tensor(loss.item(), "
               "requires_grad=True) or similar)")
    else:
        return None
    doc.cause("loss_detached",
              f"{how}, so backward() reaches no parameter: none of the {len(trainable)} trainable "
              "parameter tensors ever got a gradient", 0.97, stage,
              fix="Compute the loss from the model's scores as they come out of forward(), "
                  "outside torch.no_grad(), with no .item(), .detach(), .numpy() or "
                  "torch.tensor(...) between them; then loss.requires_grad is True without "
                  "setting it (never set it by hand: that hides the cut).",
              leaf_loss_steps=leaf, scores_without_graph=no_graph)
    return "loss_detached"


def _not_stepping(doc: Diagnosis, loop: Mapping[str, Any], history: Sequence[Mapping[str, Any]],
                  stage: str) -> str | None:
    steps, opt_steps = loop.get("steps", 0), loop.get("optimizer_steps", 0)
    moved = _moved(history)
    if steps < MIN_CHECKED or opt_steps > 0 or moved:
        return None
    if loop.get("optimizer"):
        evidence = (f"optimizer.step() ran 0 times in {steps} steps over {loop.get('epochs', 0)} "
                    "epochs" + (": the weights did not move between records (update ratio 0)"
                                if moved is False else ""))
        score = 0.97
    elif moved is False:
        evidence = (f"the weights did not move in {steps} steps (update ratio 0 at every record "
                    "after the first) while gradients flow, and no optimizer holding the "
                    "model's parameters stepped (optimizer.step() ran 0 times)")
        score = 0.9
    else:
        return None
    doc.cause("optimizer_not_stepping", evidence, score, stage,
              fix="Call optimizer.step() in every step, after loss.backward() (and "
                  "monitor.step): scheduler.step() only changes the learning rate, it does not "
                  "update the weights. Call scheduler.step() after optimizer.step(), once per "
                  "epoch unless the scheduler is meant per batch (OneCycleLR).",
              optimizer_steps=opt_steps, steps=steps)
    return "optimizer_not_stepping"


def _accumulate(doc: Diagnosis, loop: Mapping[str, Any], history: Sequence[Mapping[str, Any]],
                stage: str) -> str | None:
    r = loop.get("resets") or {}
    checked, kept = r.get("checked", 0), r.get("not_reset", 0)
    if checked < MIN_CHECKED or kept * 2 < checked:
        return None
    doc.cause("gradients_accumulate",
              f"gradients were not reset before {kept} of {checked} optimizer steps watched: "
              "each backward() added its gradient to those of every step before it, so the "
              "optimizer steps with a sum that grows over the run (no optimizer.zero_grad() "
              "between optimizer steps)", 0.95, stage,
              fix="Call optimizer.zero_grad() in every step, before loss.backward(). To "
                  "accumulate gradients over k batches on purpose, divide the loss by k and "
                  "call optimizer.step() and optimizer.zero_grad() together every k batches.",
              not_reset=kept, checked=checked)
    return "gradients_accumulate"


def _same_batch(doc: Diagnosis, loop: Mapping[str, Any], history: Sequence[Mapping[str, Any]],
                stage: str) -> str | None:
    inp = loop.get("inputs") or {}
    multi, one = inp.get("multi_step_epochs", 0), inp.get("one_input_epochs", 0)
    if multi < 1 or one < multi or inp.get("distinct") != 1 or inp.get("steps", 0) < MIN_CHECKED:
        return None
    graphs = inp.get("graphs_per_step") or []
    full = loop.get("num_graphs")
    if full and graphs and max(graphs) >= full:
        return None  # every step holds the whole training set: full-batch training, repeated
    what = f"the same {graphs[0]} graphs" if len(graphs) == 1 else "the same graphs"
    steps = _per_epoch(loop, "steps_per_epoch")
    seen = (f"; an epoch of {steps} steps of {graphs[0]} graphs should see {int(steps) * graphs[0]}"
            if len(graphs) == 1 and steps.isdigit() else "")
    doc.cause("same_batch",
              f"every one of the {inp['steps']} steps watched (in {multi} epochs of {steps} "
              f"steps each) saw {what}: one input fingerprint (node count and feature sum) "
              f"across all of them{seen}. The loop draws one batch again and again (e.g. "
              "next(iter(loader)) inside the loop, with a loader that does not shuffle)",
              0.9, stage,
              fix="Iterate over the loader once per epoch: `for batch in loader:`. "
                  "next(iter(loader)) builds a new iterator each time and returns its first "
                  "batch; if you need steps without epochs, keep one iterator "
                  "(`it = iter(loader)`) and call next(it), making a new one when it ends.",
              steps=inp["steps"])
    return "same_batch"


def _misaligned(doc: Diagnosis, loop: Mapping[str, Any], history: Sequence[Mapping[str, Any]],
                stage: str) -> str | None:
    t = loop.get("targets") or {}
    checked, bad, rev = t.get("checked", 0), t.get("misaligned", 0), t.get("reversed", 0)
    same = checked - bad - rev
    # targets deliberately reversed (lower is better) are reversed in every step; in small
    # batches misaligned ones land on either side: same order in some steps, reversed in others
    flips = same * 4 >= checked and rev * 4 >= checked
    if checked < MIN_CHECKED or (bad * 2 < checked and not flips):
        return None
    ex = t.get("example") or {}
    example = (f"; e.g. epoch {ex['epoch']}, batch {ex['step']}: targets {ex['targets']} "
               f"where the batch's y is {ex['y']} (pair order agreement {ex['agreement']:.2f})"
               if ex else "")
    doc.cause("targets_misaligned",
              f"the targets passed to monitor.step are not the batch's own y in {bad} of "
              f"{checked} steps checked: they order its graphs differently from their y "
              f"(neither the same order nor reversed)"
              + (f", and {rev} more order them in reverse where {same} order them as y"
                 if flips else "") + f"{example}. Targets taken by position "
              "(in file order) while the loader shuffles the graphs give each graph another "
              "graph's target", 0.95, stage,
              fix="Take the targets from the batch itself (batch.y), or carry them in each "
                  "Data object (data.y) so the loader shuffles them with their graphs; never "
                  "index a separate target array by batch position.",
              misaligned=bad, checked=checked)
    return "targets_misaligned"


def _schedule(doc: Diagnosis, loop: Mapping[str, Any], history: Sequence[Mapping[str, Any]],
              stage: str) -> str | None:
    lr = loop.get("lr") or {}
    opt_steps, low = loop.get("optimizer_steps", 0), lr.get("low_steps", 0)
    if opt_steps < MIN_CHECKED or low < COLLAPSED_SHARE * opt_steps or not lr.get("max"):
        return None
    epochs = loop.get("epochs", 0)
    within, changed = lr.get("changes_within_epochs", 0), lr.get("epochs_changed_within", 0)
    since = lr.get("low_since_epoch")
    by = f" by epoch {since}" if since else ""
    head = (f"lr {_g(lr.get('first'))} -> {_g(lr.get('last'))}{by} (peak {_g(lr['max'])}); "
            f"{low} of {opt_steps} optimizer steps ran below 1% of the peak")
    steps = _per_epoch(loop, "optimizer_steps_per_epoch")
    if within and changed * 2 >= max(epochs, 1):
        evidence = (f"{head}; it changed {within} times between steps of one epoch, in "
                    f"{changed} of {epochs} epochs ({steps} optimizer steps per epoch): a "
                    "scheduler meant per epoch stepped per batch")
        fix = ("Move scheduler.step() out of the batch loop, to the end of the epoch (after "
               "the epoch's optimizer steps): StepLR, ExponentialLR, CosineAnnealingLR with "
               "T_max in epochs count epochs. Only a schedule sized in steps (OneCycleLR with "
               "total_steps=epochs*len(loader)) is stepped per batch.")
    else:
        evidence = (f"{head}; it changed only between epochs: the schedule decays faster than "
                    "the model learns")
        fix = ("Decay the learning rate more slowly (a larger step_size or gamma, T_max = the "
               "number of epochs), or start it later; the runbook trains at a constant 1e-3.")
    doc.cause("lr_schedule_collapse", evidence, 0.9, stage, fix=fix, low_steps=low,
              optimizer_steps=opt_steps)
    return "lr_schedule_collapse"


def _clipped(doc: Diagnosis, loop: Mapping[str, Any], history: Sequence[Mapping[str, Any]],
             stage: str) -> str | None:
    g = loop.get("grads") or {}
    back, stepped = g.get("backward_median"), g.get("stepped_median")
    if (g.get("pairs", 0) < MIN_CHECKED or back is None or stepped is None
            or not (math.isfinite(back) and math.isfinite(stepped)) or back <= 0):
        return None  # non-finite gradients are another cause's evidence
    ratio = back / stepped if stepped > 0 else float("inf")
    if ratio < CLIPPED_RATIO or stepped >= CLIPPED_NORM:
        return None
    doc.cause("gradients_clipped_away",
              f"the optimizer stepped with gradients {ratio:.3g} times smaller than backward() "
              f"produced (median norm {stepped:.3g} against {back:.3g}, over {g['pairs']} steps "
              "watched): something between loss.backward() and optimizer.step() shrinks them "
              "(clip_grad_norm_ with a tiny max_norm, or a scaling)", 0.9, stage,
              fix="Clip at max_norm=1.0 (the runbook's training.grad_clip), not below; check any "
                  "code that rescales .grad between backward() and optimizer.step().",
              ratio=ratio, stepped_norm=stepped, backward_norm=back)
    return "gradients_clipped_away"
