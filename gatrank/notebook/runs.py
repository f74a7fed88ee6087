"""A notebook's training run: trained now, or read back from a ``metrics.jsonl`` that already
exists (the ``metrics`` parameter of 03_overfit and 04_full_train), so the same plots and
checks judge a run made elsewhere: by ``gatrank train --out``, or by your own loop with
:class:`gatrank.Monitor`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gatrank.config import Config
from gatrank.notebook.session import NotebookRun, resolve_path
from gatrank.training import TrainResult, train
from gatrank.training.history import read_run

__all__ = ["train_or_read", "run_checkpoint", "verify_fixes"]

logger = logging.getLogger(__name__)


def train_or_read(metrics: str, config: Config, *,
                  callbacks: Sequence[Callable[[dict[str, Any]], None]] = (),
                  **train_kwargs: Any) -> TrainResult:
    """``train(config, callbacks=callbacks, **train_kwargs)``; or, when ``metrics`` names a
    ``metrics.jsonl`` (or the run folder holding one), that run read back without training
    (:func:`gatrank.training.history.read_run`: ``model`` None), its records passed to
    ``callbacks`` in order, so live curves draw them as if training had just run.
    :func:`gatrank.doctor.judge_run` judges either: a Monitor's run with its ``findings.json``,
    as ``monitor.verdict()`` and ``monitor.diagnose()`` judged it.

    Raises:
        FileNotFoundError, ValueError: a missing file, or a line that is not a record (named).
    """
    if not metrics:
        return train(config, callbacks=callbacks, **train_kwargs)
    result = read_run(resolve_path(metrics, what="metrics"))
    logger.info("judging %s (%d records; no training)", result.summary["source"],
                len(result.history))
    for record in result.history:
        for cb in callbacks:
            cb(record)
    return result


def run_checkpoint(run: NotebookRun, result: TrainResult) -> Path:
    """The best checkpoint of ``result``: the notebook's own ``best.pt`` when it trained, the
    one beside the log it read otherwise (which may not exist)."""
    if result.model is None and "source" in result.summary:
        return Path(result.summary["source"]).parent / "best.pt"
    return run.out_dir / "best.pt"


def verify_fixes(run: NotebookRun, config: Config, passed: bool, *, n: int,
                 enabled: bool = True):
    """When the overfit test failed: :func:`gatrank.doctor.diagnose` on the run's graphs, model
    and loss with ``config`` as the settings (the notebook's, e.g. its learning rate: the
    doctor runs the runbook's overfit test beside them), static checks, ablations, then each
    top cause's fix applied and the test on the first ``n`` graphs re-run with it; no held-out
    stage. None when the test passed (nothing to fix) or ``enabled`` is False."""
    if passed or not enabled:
        return None
    from gatrank.doctor import DoctorOptions, diagnose

    logger.info("the overfit test failed: verifying the doctor's fixes")
    settings = config.updated({"training.overfit_n": 0})
    return diagnose(run.graphs, config=settings, model=run.model or None,
                    loss=run.loss or None, seed=run.seed,
                    options=DoctorOptions(n=n, heldout=False))
