"""``gatrank.Monitor``: the runbook's debug logging, its verdict and the doctor's reading, in a
training loop of your own.

.. code-block:: python

    from gatrank import Monitor
    monitor = Monitor(model, optimizer=optimizer, log_every=10, out_dir="runs/mine")
    for epoch in range(epochs):
        for batch in loader:
            scores = model(batch); loss = loss_fn(scores, batch.y)
            optimizer.zero_grad(); loss.backward()
            monitor.step(scores, batch.y, loss)   # after backward()
            optimizer.step()
        with torch.no_grad():                 # optional: validation, which the verdict reads
            model.eval(); monitor.validation(model(val_batch), val_batch.y); model.train()
        monitor.end_epoch()
    print(monitor.verdict())      # the runbook's pass criteria and red flags, measured
    print(monitor.diagnose())     # the doctor's reading of the run: cause ids, evidence, fixes

Which of the runbook's thresholds judge the run depends on how many graphs an epoch trains on
(counted from the scores each epoch's steps pass, or ``num_graphs=len(loader.dataset)``): up to
:data:`~gatrank.checks.verdict.OVERFIT_MAX_GRAPHS`, an overfit test, judged by its expected
results (training pairwise accuracy > 0.9, Spearman > 0.8, ...); more, a training run, judged
by the runbook's Step 3, "Monitor training" (score std, pairwise accuracy improving, gradient
norms > 0.01, validation where :meth:`Monitor.validation` reports it) and its red flags. The
verdict names the thresholds it applied.

``out_dir/metrics.jsonl`` is what ``gatrank train --out`` writes, and ``out_dir/findings.json``
(:mod:`gatrank.training.findings_file`, rewritten at each record) what the Monitor saw besides,
so ``gatrank verdict runs/mine`` and the notebooks' ``metrics`` parameter show the same verdict
and diagnosis as :meth:`Monitor.verdict` and :meth:`Monitor.diagnose`.

The recording itself is :class:`gatrank.training.monitor.LoopRecorder` (training/ owns what a
loop logs); this module adds what lives further down the data flow: the parameter checks and
update ratios of :mod:`gatrank.checks`, the verdict, the doctor's reading and the live curves
of :mod:`gatrank.notebook`. It is therefore a row of its own after ``notebook/`` in
docs/architecture.md, and ``gatrank`` exports :class:`Monitor` lazily (``import gatrank`` does
not import torch).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from gatrank.checks.probes import UpdateTracker
from gatrank.checks.static import frozen_parameters
from gatrank.checks.verdict import THRESHOLDS, Verdict, evaluate_run
from gatrank.config import Config, ConfigError
from gatrank.doctor.report import DoctorReport
from gatrank.doctor.run import diagnose_history
from gatrank.training.findings_file import remove_findings, write_findings
from gatrank.training.monitor import LoopRecorder

__all__ = ["Monitor"]

logger = logging.getLogger(__name__)


class Monitor:
    """The runbook's debug logging for a training loop you wrote.

    Every ``log_every`` epochs (and epoch 1, and the last when ``epochs`` is given) it records
    what ``gatrank train`` logs: loss, pairwise accuracy, Spearman, Kendall, NDCG@10, score
    mean/std over the epoch's scores, gradient norm (mean over steps) and per layer, valid pairs
    per batch, learning rate, how far each layer's weights moved since the previous record
    (``update_ratio*``, as :class:`~gatrank.checks.probes.ModelProbe` measures it) and the
    validation metrics (``val_*``) of the scores the loop passes to :meth:`validation`; see
    :mod:`gatrank.training.monitor` for how it differs from ``gatrank train``'s record. It warns
    once about trainable parameters the optimizer does not hold, parameters whose gradient is
    always None, and the first step with a NaN/Inf loss (epoch and batch), and keeps them for
    :meth:`diagnose`.

    It never changes training: no forward pass, no train/eval switch, no random numbers;
    gradients and weights are only read. Its cost is a list append per step outside logged
    epochs (the benchmark ``python -m benchmarks --only monitor`` measures it).

    Args:
        model: the model your loop trains.
        optimizer: your optimizer (recommended): parameters it does not hold are named, and its
            learning rate is logged and read by :meth:`diagnose`.
        log_every: record every this many epochs (the runbook: 10).
        out_dir: append each record to ``out_dir/metrics.jsonl`` (emptied first).
        epochs: how many epochs the loop runs, so that the last is recorded too.
        tie_eps, margin_eps: what counts as a pair, as your loss counts it (gatrank's
            defaults: 1e-6, 0).
        num_graphs: the graphs one epoch trains on (``len(loader.dataset)``), which decides
            whether the run is judged as an overfit test or as training; default: the scores
            an epoch's steps pass, counted.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, *,
                 log_every: int = 10, out_dir: str | Path | None = None,
                 epochs: int | None = None, tie_eps: float = 1e-6,
                 margin_eps: float = 0.0, num_graphs: int | None = None) -> None:
        if num_graphs is not None and num_graphs < 1:
            raise ValueError(f"num_graphs = {num_graphs}: pass the number of graphs one epoch "
                             "trains on (len(loader.dataset)), or None to count them")
        self.model, self.optimizer = model, optimizer
        self.num_graphs = num_graphs
        self._live: Any = None
        self.recorder = LoopRecorder(model, optimizer=optimizer, log_every=log_every,
                                     epochs=epochs, out_dir=out_dir, tie_eps=tie_eps,
                                     margin_eps=margin_eps, probes=[UpdateTracker()],
                                     callbacks=[self._on_record], watch=True)
        if self.recorder.out is not None:  # a previous run's, until this one's first record
            remove_findings(self.recorder.out)
        self.parameters = frozen_parameters(model, optimizer)
        """:func:`~gatrank.checks.static.frozen_parameters` of the model and the optimizer."""
        missing = self.parameters["not_in_optimizer"]
        if missing:
            logger.warning(
                "%d parameter tensor(s) require grad but the optimizer does not hold them, so "
                "they never change: %s%s. Build the optimizer from model.parameters() (after "
                "any unfreezing)", len(missing), ", ".join(missing[:8]),
                " ..." if len(missing) > 8 else "")

    # ------------------------------------------------------------------ the loop's calls

    def step(self, scores: Tensor, targets: Tensor, loss: Tensor | float,
             group: Tensor | None = None) -> None:
        """One step, after ``loss.backward()`` and before ``optimizer.step()``: the scores
        ``[G]`` (or ``[G, 1]``), the targets ``[G]`` and the loss; ``group`` ``[G]`` ids when
        pairs form only inside groups."""
        self.recorder.step(scores, targets, loss, group)

    def validation(self, scores: Tensor, targets: Tensor) -> None:
        """This epoch's validation scores ``[V]`` (or ``[V, 1]``) and targets ``[V]``, as your
        loop computed them (in eval mode, under ``torch.no_grad()``), before
        :meth:`end_epoch`; call it once per validation batch or once with all of them. Their
        ranking metrics go into the epoch's record as ``val_pairwise_accuracy``,
        ``val_spearman``, ``val_score_std``, ... (``gatrank train``'s keys), and a training
        run's verdict reads them."""
        self.recorder.observe_validation(scores, targets)

    def end_epoch(self) -> dict[str, Any] | None:
        """Close the epoch; returns its record when it is a logged one."""
        return self.recorder.end_epoch()

    @property
    def graphs_per_epoch(self) -> int | None:
        """The graphs one epoch trains on: ``num_graphs`` when given, else the most scores an
        epoch's steps passed (None before the first epoch ends)."""
        return self.num_graphs if self.num_graphs is not None else self.recorder.graphs_per_epoch

    @property
    def history(self) -> list[dict[str, Any]]:
        """The records so far (what ``metrics.jsonl`` holds)."""
        return self.recorder.history

    # ------------------------------------------------------------------ reading the run

    def findings(self) -> dict[str, Any]:
        """What the Monitor saw besides the records: ``frozen`` (see :attr:`parameters`),
        ``unused`` (trainable parameters whose gradient was None at every step), ``numel``
        (parameter sizes), ``nonfinite`` (the steps with a NaN/Inf loss), ``nonfinite_count``
        and ``loop``: the loop's mechanics (:meth:`gatrank.training.loop_watch.LoopWatch.summary`:
        optimizer steps and learning rates, gradient resets, the gradient stepped against the
        one backward produced, the input of each step, the targets passed against the batch's
        own ``y``, the model's mode)."""
        rec = self.recorder
        out = {"frozen": self.parameters, "unused": rec.never_grad,
               "numel": {n: p.numel() for n, p in self.model.named_parameters()},
               "nonfinite": list(rec.nonfinite), "nonfinite_count": rec.nonfinite_count}
        if rec.watch is not None:
            out["loop"] = {**rec.watch.summary(), "num_graphs": self.num_graphs}
        return out

    def verdict(self) -> Verdict:
        """The runbook's verdict on the records (:func:`~gatrank.checks.verdict.evaluate_run`):
        the overfit test's thresholds for a run over at most
        :data:`~gatrank.checks.verdict.OVERFIT_MAX_GRAPHS` graphs per epoch, Step 3's for a
        training run over more (:attr:`graphs_per_epoch`); ``judged_as`` and its last line say
        which. ``print`` it for the table."""
        return evaluate_run(self._history(), graphs_per_epoch=self.graphs_per_epoch)

    def diagnose(self) -> DoctorReport:
        """The doctor's reading of the records and of what the Monitor saw
        (:func:`~gatrank.doctor.diagnose_history`), on the verdict of :meth:`verdict`: cause
        ids with evidence and fixes, e.g. ``frozen_parameters`` naming the parameters the
        optimizer does not hold."""
        return diagnose_history(self._history(), config=self._config(),
                                findings=self.findings(),
                                graphs_per_epoch=self.graphs_per_epoch)

    def _history(self) -> list[dict[str, Any]]:
        if not self.history:
            raise ValueError("the Monitor has no record yet: call monitor.end_epoch() at the end "
                             "of each epoch (epoch 1 is always recorded)")
        return self.history

    def _settings(self) -> dict[str, float]:
        """The optimizer's learning rate and weight decay as config keys, for the doctor's
        rules; empty without an optimizer or for values gatrank's config cannot hold."""
        if self.optimizer is None:
            return {}
        group = self.optimizer.param_groups[0]
        try:
            settings = {"training.learning_rate": float(group["lr"]),
                        "training.weight_decay": float(group.get("weight_decay", 0.0))}
            Config().updated(settings)
        except (ConfigError, TypeError, ValueError):  # e.g. an lr a scheduler drove to 0
            return {}
        return settings

    def _config(self) -> Config:
        return Config().updated(self._settings())

    # ------------------------------------------------------------------ live curves

    def live(self, **kwargs: Any) -> None:
        """Show the training curves in the notebook, redrawn at each record: the figure of
        03_overfit with the runbook's thresholds (:class:`gatrank.notebook.LiveCurves`;
        ``kwargs`` go to it). The final static figure replaces the live one at the last epoch
        (with ``epochs``) or at :meth:`close`."""
        # deferred: plotly takes seconds to import, and a script that never calls live()
        # should not pay for it
        from gatrank.notebook.widgets import LiveCurves

        if self._live is None:
            self._live = LiveCurves(**{"title": "Your training loop (gatrank.Monitor)",
                                       "thresholds": THRESHOLDS, **kwargs})
            for record in self.history:
                self._live(record)

    @property
    def curves(self) -> Any:
        """The :class:`~gatrank.notebook.LiveCurves` :meth:`live` shows (None before it)."""
        return self._live

    def close(self) -> None:
        """Remove the Monitor's hooks from the model and the optimizer, and leave the final
        static figure of :meth:`live` in place of the live one; the records and findings stay
        readable."""
        self.recorder.close()
        if self._live is not None:
            self._live.finish()

    def _on_record(self, record: dict[str, Any]) -> None:
        out = self.recorder.out
        if out is not None:  # beside metrics.jsonl, so that gatrank verdict reads the same
            write_findings(out, graphs_per_epoch=self.graphs_per_epoch,
                           config=self._settings(), findings=self.findings())
        if self._live is not None:
            self._live(record)
            if record["epoch"] == self.recorder.epochs:
                self._live.finish()
