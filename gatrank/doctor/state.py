"""The state of one diagnosis: the setup, the causes found so far (raised and strengthened
in one place), the stages run, the notes, and the configs of the doctor's runs."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from gatrank.config import RECOMMENDED, Config, overfit_config
from gatrank.data import GraphSet, split_indices
from gatrank.doctor.report import CAUSES, Cause, DoctorOptions, Stage

__all__ = [
    "Diagnosis",
]


class Diagnosis:
    """One diagnosis: the setup, the runs made so far and the causes found.

    Args:
        gs: the graphs (None when a manifest could not be loaded: only the data stage runs).
        config: the user's config; its seed is replaced by ``seed`` and debug logs are off.
        model: the user's model as :func:`gatrank.doctor.diagnose` takes it.
        loss: the user's loss (import string or callable; None for gatrank's).
        model_edit: applied to every model built for the user's setup (an injected fault).
        opts: the run budgets.
        seed: seeds every run.
        user_set: the config keys the user set, with their values.
    """

    def __init__(self, gs: GraphSet | None, config: Config,
                 model: str | Callable[[int], nn.Module] | nn.Module | None,
                 loss: str | Callable | None,
                 model_edit: Callable[[nn.Module], nn.Module] | None, opts: DoctorOptions,
                 seed: int, user_set: Mapping[str, Any] | None = None) -> None:
        self.gs = gs
        self.cfg = config.updated({"training.enable_debug_logs": False, "training.seed": seed})
        self.model = model
        self.loss = loss
        self.model_edit = model_edit
        self.opts = opts
        self.builtin = model in (None, "", "gat")
        self.user_set: dict[str, Any] = dict(user_set or {})
        """The dotted config keys the user set (:func:`gatrank.config.settings_set`): only
        these are "your settings"; the rest are gatrank's defaults."""
        self.causes: dict[str, Cause] = {}
        self.stages: list[Stage] = []
        self.notes: list[str] = []
        self.static: dict[str, Any] = {}
        """Model-stage results: ``frozen``, ``path`` and ``numel`` (parameter name -> size)."""
        self.runbook_verdict: dict[str, Any] | None = None
        self.splits: dict[str, list[int]] | None = None
        """``train``/``val``/``test`` graph indices, made by the first :meth:`train_split`."""
        self.traces: dict[str, Any] = {}
        """Signal traces (:class:`~gatrank.doctor.trace.SignalTrace`) of the overfit graphs:
        ``init`` (the model stage's model) and ``end`` (after a failed overfit run)."""
        self.trace_batch: Any = None
        """The batch of the overfit graphs every trace runs on."""
        self.fix_runs: dict[tuple, Any] = {}
        """Runs that changed one thing (ablations, verified fixes) by
        :meth:`gatrank.doctor.fixes.Fix.key`: a fix an ablation already ran is not re-run."""
        self.overfit_run: Any = None
        """The overfit stage's :class:`~gatrank.doctor.symptoms.Run` (None before it)."""
        self.stage = "data"
        """The stage running now (named in a ``user_code_error``)."""
        self.stage_t0 = time.perf_counter()

    def cause(self, cid: str, evidence: str, score: float, stage: str, fix: str = "",
              **measured: Any) -> None:
        """Raise (or strengthen) a cause; evidence of repeated raises is joined."""
        fix = fix or CAUSES[cid]["fix"]
        old = self.causes.get(cid)
        if old is None:
            self.causes[cid] = Cause(cid, evidence, fix, score, stage, dict(measured))
            return
        if evidence not in old.evidence:
            old.evidence = f"{old.evidence}; {evidence}" if score <= old.score else \
                f"{evidence}; {old.evidence}"
        if score > old.score:
            old.score, old.stage = score, stage
            if fix != CAUSES[cid]["fix"]:
                old.fix = fix
        old.measured.update(measured)

    def ranked(self) -> list[Cause]:
        """The causes, most likely first (ties in the order of :data:`CAUSES`); once fixes are
        verified, a cause whose fix passed the overfit test ranks above the ones whose fix did
        not or was not tried, except a certain one (likelihood 1: a definitive check, e.g. a
        shape bug only a human can fix), which stays first."""
        order = list(CAUSES)
        return sorted(self.causes.values(), key=lambda c: (c.score < 1.0, not c.verified,
                                                           -c.score, order.index(c.id)))

    def strongest(self) -> float:
        """The score of the most likely cause so far (0 for none)."""
        return max((c.score for c in self.causes.values()), default=0.0)

    def train_split(self) -> list[int]:
        """The training graphs' indices: the manifest's split (or a seeded quarter/quarter
        val/test one), all graphs when that leaves too few for training."""
        if self.splits is None:
            try:
                self.splits = split_indices(self.gs, seed=self.cfg.training.seed,
                                            val_fraction=0.25, test_fraction=0.25)
            except ValueError as exc:  # a split column with holes: fall back to the order
                self.notes.append(f"manifest split column not usable ({exc}); using row order")
                half = len(self.gs) // 2
                self.splits = {"train": list(range(half)), "val": list(range(half, len(self.gs))),
                               "test": []}
            if len(self.splits["train"]) < max(2, len(self.gs) // 4):
                self.splits = {"train": list(range(len(self.gs))), "val": [], "test": []}
        return self.splits["train"]

    def overfit_cfg(self, **overrides: Any) -> Config:
        """The runbook's overfit-test config on the user's, with the doctor's epoch budget."""
        cfg = overfit_config(self.cfg, self.opts.n).updated(
            {"training.epochs": self.opts.overfit_epochs})
        return cfg.updated(overrides) if overrides else cfg

    def user_cfg(self, **overrides: Any) -> Config:
        """The user's own training settings, with the doctor's epoch budget (no overfit
        subset, no early stopping)."""
        cfg = self.cfg.updated({"training.overfit_n": 0, "training.epochs": self.opts.user_epochs,
                                "training.log_every": 10, "training.patience": 0})
        return cfg.updated(overrides) if overrides else cfg

    def own_settings(self) -> dict[str, Any]:
        """The training settings the user set to something other than the runbook's
        recommended config (:data:`gatrank.config.RECOMMENDED`): what the your-settings stage
        judges. ``model.dropout`` counts for gatrank's own GAT only (a user's model has its
        own dropout, whatever the config says)."""
        keys = ["training.learning_rate", "training.batch_size", "training.weight_decay",
                "training.grad_clip"] + (["model.dropout"] if self.builtin else [])
        return {k: self.user_set[k] for k in keys
                if k in self.user_set and self.user_set[k] != RECOMMENDED[k]}

    @property
    def loss_name(self) -> str:
        """How the report names the loss: its import string, its function name, or gatrank's
        ``pairwise_rank_loss``."""
        loss = self.loss
        if not loss:
            return "pairwise_rank_loss"
        return loss if isinstance(loss, str) else getattr(loss, "__name__", type(loss).__name__)

    def begin(self, name: str) -> float:
        """Mark the stage ``name`` as running; its start time."""
        self.stage, self.stage_t0 = name, time.perf_counter()
        return self.stage_t0

    def add_stage(self, name: str, status: str, summary: dict[str, Any], t0: float) -> None:
        """Record a finished stage that began at ``time.perf_counter()`` value ``t0``."""
        self.stages.append(Stage(name, status, summary, time.perf_counter() - t0))
