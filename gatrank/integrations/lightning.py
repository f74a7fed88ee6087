"""A PyTorch Lightning callback that gives a ``LightningModule``'s training the records, the
verdict and the doctor's reading of :class:`gatrank.Monitor`.

.. code-block:: python

    from gatrank.integrations.lightning import MonitorCallback

    class Ranker(L.LightningModule):
        def training_step(self, batch, batch_idx):
            scores = self.model(batch)
            loss = loss_fn(scores, batch.y)
            return {"loss": loss, "scores": scores, "targets": batch.y}

    monitor = MonitorCallback(log_every=10, out_dir="runs/mine")
    L.Trainer(max_epochs=100, callbacks=[monitor]).fit(Ranker(), loader)
    print(monitor.verdict()); print(monitor.diagnose())

The contract: ``training_step`` returns a dict with ``loss`` (as Lightning wants it), ``scores``
(one per graph, ``[G]`` or ``[G, 1]``) and ``targets`` (``[G]``; without it the batch's ``y`` is
read); ``group`` is read too when present. Gradients are read in ``on_before_optimizer_step``
(after backward, before clipping and the step, as ``gatrank train`` measures them), the outputs
in ``on_train_batch_end``, and each epoch closes in ``on_train_epoch_end``; ``max_epochs`` makes
the last epoch a logged one. Under a multi-process strategy each process records its own
batches and only rank 0 writes ``metrics.jsonl``.

Layers are named inside the module that holds all of the LightningModule's parameters
(``self.model = GATRanker(...)`` gives ``convs.0``, ``score_head.0`` as a plain loop over that
model names them); ``module="name"`` picks a submodule, ``module="."`` the LightningModule
itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

try:
    import lightning.pytorch as pl
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

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        optimizers = trainer.optimizers
        self.monitor = Monitor(
            monitored_module(pl_module, self.module),
            optimizer=optimizers[0] if optimizers else None, log_every=self.log_every,
            out_dir=self.out_dir if trainer.is_global_zero else None,
            epochs=trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None,
            tie_eps=self.tie_eps, margin_eps=self.margin_eps)

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
        targets = outputs.get("targets")
        if targets is None:
            targets = getattr(batch, "y", None)
            if targets is None:
                raise ValueError("MonitorCallback: training_step returned no 'targets' and the "
                                 "batch has no y; add 'targets' to the dict training_step "
                                 "returns")
        self._monitor().recorder.observe_batch(outputs["scores"], targets, outputs["loss"],
                                               outputs.get("group"))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._monitor().end_epoch()

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
