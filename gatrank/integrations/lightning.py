"""A PyTorch Lightning callback that gives a ``LightningModule``'s training the records, the
verdict and the doctor's reading of :class:`gatrank.Monitor`, loop checks included.

.. code-block:: python

    from gatrank.integrations.lightning import MonitorCallback

    class Ranker(L.LightningModule):
        def training_step(self, batch, batch_idx):
            scores = self.model(batch)
            loss = loss_fn(scores, batch.y)
            return {"loss": loss, "scores": scores, "targets": batch.y}

        def validation_step(self, batch, batch_idx):          # optional
            return {"scores": self.model(batch), "targets": batch.y}

    monitor = MonitorCallback(log_every=10, out_dir="runs/mine")
    L.Trainer(max_epochs=100, callbacks=[monitor]).fit(Ranker(), loader, val_loader)
    print(monitor.verdict()); print(monitor.diagnose())

The contract: ``training_step`` returns a dict with ``loss`` (as Lightning wants it), ``scores``
(one per graph, ``[G]`` or ``[G, 1]``) and ``targets`` (``[G]``; without it the batch's ``y`` is
read); ``group`` is read too when present. ``validation_step`` may return a dict with ``scores``
and ``targets`` (or a batch with ``y``): the epoch's record then gets the validation metrics
(``val_spearman``, ``val_pairwise_accuracy``, ...), which a training run's verdict reads; a
``validation_step`` that returns anything else is not recorded, nor is the validation of the
sanity check or of ``trainer.validate()``; several validation runs in one epoch
(``val_check_interval`` below 1) pool into its record. ``max_epochs`` makes the last epoch a
logged one. Under a multi-process strategy each process records its own batches and only rank 0
writes ``metrics.jsonl``.

Where each hook reads (Lightning 2.x's order within a step and an epoch):

- ``on_train_start`` builds the Monitor on ``trainer.optimizers[0]``, after the sanity check's
  validation, which is not recorded;
- ``on_after_backward``, after every backward: the end of the gradient-reset check that the
  last optimizer step's gradients were zeroed (with ``accumulate_grad_batches`` several
  backward passes add up before one step, as they should);
- ``on_before_optimizer_step``: the gradients (after backward and any AMP unscaling, before
  clipping and the step, as ``gatrank train`` measures them);
- ``on_train_batch_end``: the training step's outputs; ``on_validation_batch_end``: the
  validation step's; Lightning validates before ``on_train_epoch_end``, so an epoch's
  validation lands in that epoch's record;
- ``on_train_epoch_end`` closes the epoch; ``on_train_end`` (or ``on_exception``) removes the
  Monitor's hooks (on the optimizer, the parameters and the model's input). The records,
  :meth:`~MonitorCallback.verdict` and :meth:`~MonitorCallback.diagnose` stay readable after
  ``fit``.

What it catches in a Lightning loop, beside what the records show
(:mod:`gatrank.doctor.loop_causes`): targets in ``training_step`` that are not the batch's own
(``targets_misaligned``: e.g. ``self.y_all[batch_idx * 8:(batch_idx + 1) * 8]`` while the loader
shuffles), a ``train_dataloader`` that serves one batch at every step (``same_batch``), a
per-epoch scheduler configured with ``"interval": "step"`` (``lr_schedule_collapse``, when the
run failed) and ``gradient_clip_val`` far too small (``gradients_clipped_away``, when the run
failed; also under ``accumulate_grad_batches``). Lightning calls ``optimizer.step()``
and ``zero_grad()`` itself, so ``optimizer_not_stepping`` and ``gradients_accumulate`` come only
from a LightningModule that overrides ``optimizer_step`` or ``optimizer_zero_grad``.

Layers are named inside the module that holds all of the LightningModule's parameters
(``self.model = GATRanker(...)`` gives ``convs.0``, ``score_head.0`` as a plain loop over that
model names them); ``module="name"`` picks a submodule, ``module="."`` the LightningModule
itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor, nn

try:
    import lightning.pytorch as pl
    from lightning.pytorch.trainer.states import TrainerFn
except ImportError as exc:  # the extra is optional: say how to get it
    raise ImportError("gatrank.integrations.lightning needs PyTorch Lightning 2.2 or later: "
                      "pip install 'gatrank[lightning]'") from exc

from gatrank.checks.verdict import Verdict
from gatrank.doctor.report import DoctorReport
from gatrank.monitor import Monitor

__all__ = ["MonitorCallback", "monitored_module"]


def monitored_module(pl_module: nn.Module, module: str = "") -> nn.Module:
    """The module whose parameters the Monitor names: ``module`` by its attribute path, the
    LightningModule itself for ``"."``, else its one child holding all of its parameters (the
    LightningModule when there is none)."""
    if module == ".":
        return pl_module
    if module:
        return pl_module.get_submodule(module)
    total = sum(1 for _ in pl_module.parameters())
    for child in pl_module.children():
        if total and sum(1 for _ in child.parameters()) == total:
            return child
    return pl_module


def _targets(outputs: Mapping[str, Any], batch: Any, step: str) -> Tensor:
    """The ``targets`` a step returned, else its batch's ``y``; an error naming ``step``."""
    targets = outputs.get("targets")
    if targets is None:
        targets = getattr(batch, "y", None)
        if targets is None:
            raise ValueError(f"MonitorCallback: {step} returned no 'targets' and the batch has "
                             f"no y; add 'targets' to the dict {step} returns")
    return targets


class MonitorCallback(pl.Callback):
    """:class:`gatrank.Monitor` for ``Trainer(callbacks=[...])``.

    Args:
        log_every: record every this many epochs (and the first and the last).
        out_dir: append each record to ``out_dir/metrics.jsonl`` (rank 0 only).
        module: which module's parameters to name (see :func:`monitored_module`).
        tie_eps, margin_eps: what counts as a pair, as the loss counts it.
    """

    def __init__(self, *, log_every: int = 10, out_dir: str | Path | None = None,
                 module: str = "", tie_eps: float = 1e-6, margin_eps: float = 0.0) -> None:
        super().__init__()
        self.log_every, self.out_dir, self.module = log_every, out_dir, module
        self.tie_eps, self.margin_eps = tie_eps, margin_eps
        self.monitor: Monitor | None = None
        """The Monitor of the current (or last) fit; None before training starts."""

    # ------------------------------------------------------------------ training

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        optimizers = trainer.optimizers
        self.monitor = Monitor(
            monitored_module(pl_module, self.module),
            optimizer=optimizers[0] if optimizers else None, log_every=self.log_every,
            out_dir=self.out_dir if trainer.is_global_zero else None,
            epochs=trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None,
            tie_eps=self.tie_eps, margin_eps=self.margin_eps)

    def on_after_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # the watch's reset probe reads what a parameter's gradient held when a backward adds to
        # it, until told that backward is over; a plain loop tells it at monitor.step after each
        # backward. on_before_optimizer_step comes once per optimizer step, so with
        # accumulate_grad_batches the second backward would read the first one's gradient as a
        # gradient never reset
        watch = self._monitor().recorder.watch
        if watch is not None:
            watch.after_backward(None)

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                                 optimizer: Any) -> None:
        self._monitor().recorder.observe_gradients()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        if not isinstance(outputs, Mapping) or "scores" not in outputs:
            got = sorted(outputs) if isinstance(outputs, Mapping) else type(outputs).__name__
            raise ValueError(
                f"MonitorCallback: training_step returned {got}; return a dict with 'loss', "
                "'scores' (one per graph) and 'targets' (else batch.y is read), e.g. "
                "{'loss': loss, 'scores': scores, 'targets': batch.y}")
        self._monitor().recorder.observe_batch(
            outputs["scores"], _targets(outputs, batch, "training_step"), outputs["loss"],
            outputs.get("group"))

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                                outputs: Any, batch: Any, batch_idx: int,
                                dataloader_idx: int = 0) -> None:
        # the sanity check validates before on_train_start, and trainer.validate() after fit:
        # neither belongs to an epoch of the fit
        if (self.monitor is None or trainer.sanity_checking
                or trainer.state.fn != TrainerFn.FITTING):
            return
        if not isinstance(outputs, Mapping) or "scores" not in outputs:
            return
        self.monitor.validation(outputs["scores"], _targets(outputs, batch, "validation_step"))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._monitor().end_epoch()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._monitor().close()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                     exception: BaseException) -> None:
        if self.monitor is not None:
            self.monitor.close()

    # ------------------------------------------------------------------ reading the fit

    def _monitor(self) -> Monitor:
        if self.monitor is None:
            raise RuntimeError("MonitorCallback: training has not started (on_train_start "
                               "builds the Monitor)")
        return self.monitor

    @property
    def history(self) -> list[dict[str, Any]]:
        """The records so far (what ``metrics.jsonl`` holds)."""
        return self._monitor().history

    def verdict(self) -> Verdict:
        """:meth:`gatrank.Monitor.verdict` of the fit."""
        return self._monitor().verdict()

    def diagnose(self) -> DoctorReport:
        """:meth:`gatrank.Monitor.diagnose` of the fit."""
        return self._monitor().diagnose()
