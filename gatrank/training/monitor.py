"""The recording half of :class:`gatrank.Monitor`: a user's own training loop logged the way
``gatrank train`` logs its epochs.

A :class:`LoopRecorder` sees each step after ``loss.backward()`` (gradients) and its scores,
targets and loss; at the end of epoch 1, of every ``log_every``-th epoch and of the last (when
the number of epochs is known) it builds the record ``gatrank train`` writes to
``metrics.jsonl`` (same keys where the user's loop can give them, same format, measured by the
same functions) and appends it there. Between logged epochs a step costs a list append and a
look at the gradients not seen yet; the metrics and gradient norms are measured only in logged
epochs.

What differs from ``gatrank train``'s record, because a user's loop is not gatrank's:

- the ranking metrics and score statistics are over the scores the loop computed during the
  epoch (training mode, each batch before its update), not a rescoring of the training set in
  eval mode afterwards, which would need the data and a forward pass the loop did not ask for;
- ``loss`` is the mean over *every* step of the epoch, so a non-finite step shows as a
  non-finite loss (gatrank's loop skips or stops at such steps; a user's loop applies them);
  ``nonfinite_steps`` counts them over the run, and ``skipped_steps`` is 0 (nothing skipped);
- no pooled-embedding spread (``emb_*``); validation metrics (``val_*``, after ``time_s`` as
  ``gatrank train`` orders them) only where the loop passes its validation scores
  (:meth:`LoopRecorder.observe_validation`); ``lr`` only with the optimizer.

It also counts the graphs each epoch scores (:attr:`LoopRecorder.graphs_per_epoch`): whether
the run is an overfit test or training decides which of the runbook's thresholds judge it
(:func:`gatrank.checks.verdict.evaluate_run`). The count is not part of the records, which
keep ``gatrank train``'s keys.

It never changes training: no forward pass, no ``model.train()``/``eval()``, no random numbers,
gradients and parameters only read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from gatrank.io import append_jsonl
from gatrank.losses import valid_pair_mask
from gatrank.metrics import grad_norms, ranking_metrics
from gatrank.training.loop_watch import LoopWatch

__all__ = ["LoopRecorder", "RecordProbe", "NonFiniteStep"]

logger = logging.getLogger(__name__)

RecordProbe = Callable[[nn.Module], dict[str, Any]]
"""``probe(model) -> dict`` merged into each record (after the epoch's last step)."""

Callback = Callable[[dict[str, Any]], None]
"""Called with each record once it is written."""

MAX_NONFINITE_KEPT = 100
"""Non-finite steps listed (all are counted)."""


@dataclass(frozen=True)
class NonFiniteStep:
    """A step whose loss was NaN or Inf: the epoch (1-based) and the step's index in it
    (0-based: the batch index, as ``gatrank train`` names its steps)."""

    epoch: int
    step: int
    loss: float

    def __str__(self) -> str:
        return f"epoch {self.epoch}, batch {self.step} (loss={self.loss})"


@dataclass
class _Epoch:
    """What the steps of the current epoch left for its record."""

    losses: list[Tensor] = field(default_factory=list)
    """Every step's detached loss (checked for NaN/Inf at the epoch's end: one sync)."""
    scores: list[Tensor] = field(default_factory=list)
    targets: list[Tensor] = field(default_factory=list)
    groups: list[Tensor | None] = field(default_factory=list)
    norms: list[float] = field(default_factory=list)
    """Total gradient norm per step (logged epochs only)."""
    per_layer: dict[str, float] = field(default_factory=dict)
    """Gradient norm per layer at the epoch's last step (logged epochs only)."""
    graphs: int = 0
    """Scores the steps passed (every epoch: a shape read, no copy)."""
    val_scores: list[Tensor] = field(default_factory=list)
    val_targets: list[Tensor] = field(default_factory=list)


def _scalar(loss: Tensor | float) -> Tensor:
    if isinstance(loss, Tensor):
        if loss.numel() != 1:
            raise ValueError(f"monitor.step: the loss has shape {tuple(loss.shape)}; pass the "
                             "scalar loss the loop calls backward() on (reduce a per-graph or "
                             "per-pair loss with .mean() first)")
        return loss.detach().reshape(())
    try:
        return torch.tensor(float(loss))
    except (TypeError, ValueError):
        raise TypeError(f"monitor.step: the loss is a {type(loss).__name__}; pass the scalar "
                        "loss tensor the loop calls backward() on (or its float)") from None


def _check_lengths(scores: Tensor, targets: Tensor, where: str) -> None:
    """An error naming ``where`` when ``scores`` and ``targets`` are not one score per target
    (a shape read: no copy, no sync)."""
    for name, t in (("scores", scores), ("targets", targets)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{where}: {name} is a {type(t).__name__}; pass the tensor the loss "
                            "gets (one value per graph)")
    if scores.numel() != targets.numel():
        raise ValueError(
            f"{where}: {scores.numel()} scores for {targets.numel()} targets (scores of shape "
            f"{tuple(scores.shape)}, targets of shape {tuple(targets.shape)}); pass one score per "
            "graph and the graphs' targets, as the loss sees them (node scores need a readout, "
            "e.g. global_mean_pool(x, batch.batch))")


def _pair(scores: Tensor, targets: Tensor, where: str) -> tuple[Tensor, Tensor]:
    """Detached, flat scores ``[G]`` and targets ``[G]``; an error naming ``where`` when they
    are not one score per target."""
    _check_lengths(scores, targets, where)
    return scores.detach().reshape(-1), targets.detach().reshape(-1)


class LoopRecorder:
    """Records a user's training loop in ``gatrank train``'s format.

    Args:
        model: the model being trained (its parameters and gradients are read, never changed).
        optimizer: the loop's optimizer: its first parameter group's ``lr`` is recorded.
        log_every: record epoch 1, every ``log_every``-th epoch and the last.
        epochs: the number of epochs the loop runs, so that the last one is recorded too
            (``None``: unknown; only epoch 1 and the multiples of ``log_every``).
        out_dir: append each record to ``out_dir/metrics.jsonl`` (emptied first, as
            ``gatrank train --out`` does); ``None``: keep them in :attr:`history` only.
        tie_eps, margin_eps: what counts as a valid pair (pairwise accuracy and the
            ``valid_pairs_*`` counts), as the loss configures it.
        probes: measurements merged into each record (see :data:`RecordProbe`).
        callbacks: called with each record.
        watch: watch the loop's mechanics too (:class:`~gatrank.training.loop_watch.LoopWatch`:
            hooks on the optimizer, the model's input and a few parameters' gradients), read
            by :attr:`watch` and removed by :meth:`close`.
    """

    def __init__(self, model: nn.Module, *, optimizer: torch.optim.Optimizer | None = None,
                 log_every: int = 10, epochs: int | None = None,
                 out_dir: str | Path | None = None, tie_eps: float = 1e-6,
                 margin_eps: float = 0.0, probes: Sequence[RecordProbe] = (),
                 callbacks: Sequence[Callback] = (), watch: bool = False) -> None:
        if log_every < 1:
            raise ValueError(f"log_every = {log_every}: use 1 or more (gatrank train logs every "
                             "10 epochs)")
        if epochs is not None and epochs < 1:
            raise ValueError(f"epochs = {epochs}: pass the number of epochs the loop runs, or "
                             "None if it is not known")
        self.model, self.optimizer = model, optimizer
        self.log_every, self.epochs = log_every, epochs
        self.tie_eps, self.margin_eps = tie_eps, margin_eps
        self.probes, self.callbacks = list(probes), list(callbacks)
        self.history: list[dict[str, Any]] = []
        """One record per logged epoch (what ``metrics.jsonl`` holds)."""
        self.epoch = 1
        """The epoch being trained (1-based); :meth:`end_epoch` moves it on."""
        self.nonfinite: list[NonFiniteStep] = []
        """The first :data:`MAX_NONFINITE_KEPT` steps with a NaN/Inf loss."""
        self.nonfinite_count = 0
        self.graphs_per_epoch: int | None = None
        """The most scores an epoch's steps passed (the graphs one epoch trains on); None
        before the first epoch ends."""
        self._never = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self._trainable = [p for _, p in self._never]
        self._gradient_steps = 0
        self._warned_never = False
        self._cur = _Epoch()
        self._t0 = time.perf_counter()
        self.out = Path(out_dir) if out_dir is not None else None
        if self.out is not None:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "metrics.jsonl").write_text("")
        self.watch: LoopWatch | None = (
            LoopWatch(model, optimizer, sampling=lambda: self.logging_now,
                      epoch=lambda: self.epoch) if watch else None)
        """The loop's mechanics (None without ``watch``)."""

    # ------------------------------------------------------------------ what a step shows

    @property
    def logging_now(self) -> bool:
        """Whether the current epoch is one that gets a record."""
        e = self.epoch
        return e == 1 or e % self.log_every == 0 or e == self.epochs

    @property
    def never_grad(self) -> list[str]:
        """Trainable parameters whose ``.grad`` was None at every step seen so far."""
        return [n for n, _ in self._never] if self._gradient_steps else []

    def step(self, scores: Tensor, targets: Tensor, loss: Tensor | float,
             group: Tensor | None = None) -> None:
        """One training step, after ``loss.backward()`` and before ``optimizer.step()``:
        :meth:`observe_gradients` then :meth:`observe_batch`.

        Raises:
            ValueError: on the first step, a loss that still has its graph while no parameter
                has a gradient (``monitor.step`` before ``loss.backward()``); scores and
                targets of different lengths; a loss that is not a scalar.
        """
        if self._gradient_steps == 0:
            self._check_after_backward(loss)
        self.observe_gradients()
        self.observe_batch(scores, targets, loss, group)

    def _check_after_backward(self, loss: Tensor | float) -> None:
        if not (isinstance(loss, Tensor) and loss.grad_fn is not None and self._trainable):
            return
        if all(p.grad is None for p in self._trainable):
            raise ValueError(
                "monitor.step(scores, targets, loss) came before loss.backward(): no parameter "
                "of the model has a gradient yet while the loss still has its graph "
                f"(grad_fn={type(loss.grad_fn).__name__}). Call it after loss.backward() and "
                "before optimizer.step(). (If backward() did run, the loss does not depend on "
                "the model's parameters: compute it from the model's scores, without "
                ".detach(), .item() or torch.no_grad().)")

    def observe_gradients(self) -> None:
        """The gradients of this step (call after backward, before the optimizer's step)."""
        self._gradient_steps += 1
        if self._never:  # parameters whose gradient was None so far: most leave at step one
            self._never = [(n, p) for n, p in self._never if p.grad is None]
        total = None
        if self.logging_now:
            total, self._cur.per_layer = grad_norms(self.model)
            self._cur.norms.append(total)
        if self.watch is not None:
            self.watch.after_backward(total)

    def observe_batch(self, scores: Tensor, targets: Tensor, loss: Tensor | float,
                      group: Tensor | None = None) -> None:
        """This step's scores ``[G]`` (or ``[G, 1]``), targets ``[G]`` and scalar loss."""
        _check_lengths(scores, targets, "monitor.step")
        self._cur.losses.append(_scalar(loss))
        self._cur.graphs += scores.numel()
        if self.watch is not None:
            self.watch.before_step(targets, scores, loss)
        if not self.logging_now:
            return
        s, y = _pair(scores, targets, "monitor.step")
        # copies: the loop may reuse or change these tensors in place after the step
        self._cur.scores.append(s.clone())
        self._cur.targets.append(y.clone())
        self._cur.groups.append(None if group is None else group.detach().reshape(-1).clone())

    def observe_validation(self, scores: Tensor, targets: Tensor) -> None:
        """Validation scores ``[V]`` (or ``[V, 1]``) and targets ``[V]`` of this epoch, as the
        loop computed them; several calls in one epoch (one per validation batch) are pooled.
        Their ranking metrics go into the epoch's record as ``val_*`` keys, as ``gatrank
        train`` logs its validation split; outside logged epochs they are not kept."""
        if not self.logging_now:
            return
        s, y = _pair(scores, targets, "monitor.validation")
        self._cur.val_scores.append(s.clone())
        self._cur.val_targets.append(y.clone())

    # ------------------------------------------------------------------ the epoch's record

    def end_epoch(self) -> dict[str, Any] | None:
        """Close the epoch: name its non-finite steps and, in a logged epoch, build, write and
        return its record (``None`` otherwise)."""
        cur, self._cur = self._cur, _Epoch()
        if self.watch is not None:
            self.watch.end_epoch()
        if cur.graphs:
            self.graphs_per_epoch = max(self.graphs_per_epoch or 0, cur.graphs)
        if not cur.losses:
            logger.warning("epoch %d ended without a step (call monitor.step(scores, targets, "
                           "loss) after each backward()): nothing recorded", self.epoch)
            self._next_epoch()
            return None
        losses = torch.stack(cur.losses).double().cpu()
        self._note_nonfinite(losses)
        if not self._warned_never:
            self._warn_never_grad()
        record = self._record(cur, losses) if self.logging_now else None
        if record is not None:
            self.history.append(record)
            if self.out is not None:
                append_jsonl(self.out / "metrics.jsonl", [record])
            for cb in self.callbacks:
                cb(record)
        self._next_epoch()
        return record

    def _next_epoch(self) -> None:
        self.epoch += 1
        if self.watch is not None:
            self.watch.start_epoch()

    def close(self) -> None:
        """Remove the watch's hooks (the records and readings stay)."""
        if self.watch is not None:
            self.watch.close()

    def _note_nonfinite(self, losses: Tensor) -> None:
        bad = torch.nonzero(~torch.isfinite(losses)).reshape(-1).tolist()
        for i in bad:
            if len(self.nonfinite) < MAX_NONFINITE_KEPT:
                self.nonfinite.append(NonFiniteStep(self.epoch, i, float(losses[i])))
            if self.nonfinite_count == 0:
                logger.warning(
                    "non-finite loss at %s: the loop's optimizer step applies it (gatrank "
                    "train would stop or skip it). Lower the learning rate, clip gradients "
                    "(torch.nn.utils.clip_grad_norm_), check the data for NaN/Inf (gatrank "
                    "check-data); later ones are counted in nonfinite_steps",
                    NonFiniteStep(self.epoch, i, float(losses[i])))
            self.nonfinite_count += 1

    def _warn_never_grad(self) -> None:
        self._warned_never = True
        if self._gradient_steps and self._never:
            names = [n for n, _ in self._never]
            logger.warning(
                "%d parameter tensor(s) require grad but had no gradient in any step of epoch "
                "1: %s%s. They are not used in forward(), or cut off from the loss (detach, "
                ".item(), a torch.no_grad block)", len(names), ", ".join(names[:8]),
                " ..." if len(names) > 8 else "")

    def _record(self, cur: _Epoch, losses: Tensor) -> dict[str, Any]:
        """The record of the epoch just closed, keys in ``gatrank train``'s order."""
        empty = torch.zeros(0)
        scores = torch.cat(cur.scores).float().cpu() if cur.scores else empty
        targets = torch.cat(cur.targets).float().cpu() if cur.targets else empty
        pairs = self._pair_counts(cur)
        record: dict[str, Any] = {
            "epoch": self.epoch,
            "loss": float(losses.mean()),
            **ranking_metrics(scores, targets, tie_eps=self.tie_eps),
            "grad_norm": float(np.mean(cur.norms)) if cur.norms else 0.0,
            "grad_norm_per_layer": cur.per_layer,
            "valid_pairs_mean": float(np.mean(pairs)) if pairs else 0.0,
            "batches_without_pairs": int(sum(p == 0 for p in pairs)),
            "valid_pairs_min": int(min(pairs)) if pairs else 0,
            "skipped_steps": 0,
            "nonfinite_steps": self.nonfinite_count,
        }
        if self.optimizer is not None:
            record["lr"] = float(self.optimizer.param_groups[0]["lr"])
        record["time_s"] = round(time.perf_counter() - self._t0, 3)
        if cur.val_scores:
            val = ranking_metrics(torch.cat(cur.val_scores).float().cpu(),
                                  torch.cat(cur.val_targets).float().cpu(), tie_eps=self.tie_eps)
            record.update({f"val_{k}": v for k, v in val.items()})
        for probe in self.probes:
            record.update(probe(self.model))
        return record

    def _pair_counts(self, cur: _Epoch) -> list[int]:
        """Valid pairs in each batch of the epoch (the loss's rule, :func:`valid_pair_mask`)."""
        return [int(valid_pair_mask(y.double().cpu(), margin_eps=self.margin_eps,
                                    tie_eps=self.tie_eps,
                                    group=None if g is None or bool((g < 0).all()) else g.cpu()
                                    ).sum())
                for y, g in zip(cur.targets, cur.groups, strict=True)]
