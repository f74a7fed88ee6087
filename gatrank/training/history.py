"""A run read back from its files: the records of ``metrics.jsonl`` (what ``gatrank train
--out`` and :class:`gatrank.Monitor` write) and, beside them, ``summary.json`` when training
wrote one and ``findings.json`` when a Monitor did, so a run that already happened is judged
without training (``gatrank verdict``, the notebooks' ``metrics`` parameter) as it was judged
when it ran."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gatrank.config import Config, ConfigError
from gatrank.io import read_jsonl
from gatrank.training.findings_file import RunFindings, read_findings
from gatrank.training.loop import TrainResult

__all__ = ["HISTORY_KEYS", "metrics_file", "read_history", "read_run", "run_config",
           "run_findings", "epoch_graphs"]

logger = logging.getLogger(__name__)

HISTORY_KEYS: tuple[str, ...] = ("epoch", "loss", "pairwise_accuracy", "spearman", "score_std",
                                 "grad_norm")
"""What every logged record holds and the runbook's verdict reads."""


def metrics_file(path: str | Path) -> Path:
    """``path`` itself, or ``path/metrics.jsonl`` for a run folder.

    Raises:
        FileNotFoundError: naming what was looked for and what to pass instead.
    """
    path = Path(path).expanduser()
    file = path / "metrics.jsonl" if path.is_dir() else path
    if not file.is_file():
        where = f"{path} holds no metrics.jsonl" if path.is_dir() else f"{path}: no such file"
        raise FileNotFoundError(f"{where}; pass a run folder (gatrank train --out DIR, "
                                "Monitor(out_dir=DIR)) or the metrics.jsonl in it")
    return file


def read_history(path: str | Path) -> list[dict[str, Any]]:
    """The records of a run (a ``metrics.jsonl`` or its folder), each checked for
    :data:`HISTORY_KEYS` holding numbers (NaN allowed: a diverged run is still judged).

    Raises:
        FileNotFoundError: no such file (see :func:`metrics_file`).
        ValueError: naming the file and the line: not JSON, a key missing or not a number; or
            a file without any record.
    """
    file = metrics_file(path)
    records = read_jsonl(file)
    if not records:
        raise ValueError(f"{file} holds no record: no epoch was logged yet (gatrank train and "
                         "the Monitor log epoch 1 when it ends)")
    for line, rec in enumerate(records, 1):
        missing = [k for k in HISTORY_KEYS if k not in rec]
        if missing:
            raise ValueError(f"{file}, line {line}: no {', '.join(map(repr, missing))}; each "
                             f"record needs {', '.join(HISTORY_KEYS)}, as gatrank train and "
                             "the Monitor write them")
        bad = [f"{k}={rec[k]!r}" for k in HISTORY_KEYS
               if isinstance(rec[k], bool) or not isinstance(rec[k], (int, float))]
        if bad:
            raise ValueError(f"{file}, line {line}: {', '.join(bad)} is not a number")
    return records


def read_run(path: str | Path) -> TrainResult:
    """A finished (or running) run as :func:`~gatrank.training.train` would have returned it,
    without the model (``model`` is None).

    ``summary`` is the ``summary.json`` beside the log when there is one (``gatrank train
    --out``); otherwise, for a log alone (a :class:`gatrank.Monitor`'s), the part of it the
    history gives: ``final``, ``epochs_run``, ``wall_time_s``, the best epoch by validation
    Spearman (the last without validation), ``status`` ``"logged"`` and ``source``.
    """
    file = metrics_file(path)
    history = read_history(file)
    summary_path = file.parent / "summary.json"
    summary = None
    if summary_path.is_file():
        try:
            summary = json.loads(summary_path.read_text(encoding="utf-8"))
        except ValueError as exc:
            logger.warning("%s is not valid JSON (%s): judging %s alone", summary_path, exc, file)
    if not isinstance(summary, dict):
        summary = _summary_of(history)
    summary["source"] = str(file)
    return TrainResult(model=None, history=history, summary=summary,
                       splits=summary.get("splits", {}) or {})


def _summary_of(history: list[dict[str, Any]]) -> dict[str, Any]:
    last = history[-1]
    validated = [r for r in history if "val_spearman" in r]
    best = max(validated, key=lambda r: r["val_spearman"]) if validated else last
    return {"mode": "logged", "status": "logged", "stop_reason": "",
            "epochs_run": last["epoch"], "final": last, "best_epoch": best["epoch"],
            "best_val_spearman": best.get("val_spearman"),
            "wall_time_s": last.get("time_s", 0.0), "split_sizes": {}}


def run_config(summary: dict[str, Any]) -> Config:
    """The config a run's summary holds (``gatrank train`` stores it); gatrank's defaults when
    it holds none or one this version cannot read (logged as a warning)."""
    raw = summary.get("config")
    if raw is None:
        return Config()
    try:
        return Config.from_dict(raw, source=summary.get("source", "summary.json"))
    except (ConfigError, TypeError, ValueError) as exc:
        logger.warning("the run's config is not usable (%s); reading the run with gatrank's "
                       "defaults", exc)
        return Config()


def run_findings(result: TrainResult) -> RunFindings | None:
    """The :class:`gatrank.Monitor`'s ``findings.json`` beside the log of a run read back
    (:func:`read_run`; see :mod:`gatrank.training.findings_file`). None for a run trained here,
    a log without one, and a malformed one: that is logged as a warning naming the file and
    what is wrong, and the log is judged alone, as :func:`read_run` does with a
    ``summary.json`` that is not JSON."""
    source = result.summary.get("source")
    if not source:
        return None
    try:
        return read_findings(source)
    except ValueError as exc:
        logger.warning("%s; judging %s alone", exc, source)
        return None


def epoch_graphs(summary: Mapping[str, Any]) -> int | None:
    """The graphs one epoch of a ``gatrank train`` run trained on, as
    :func:`gatrank.checks.verdict.evaluate_run` reads it: the training split of full training
    (``mode`` ``"full"``). None for the overfit test (``"overfit"``: judged by its thresholds
    whatever its ``n``, as ``gatrank train`` and ``--stop-at-verdict`` judge it) and for a log
    without a summary (``"logged"``: a Monitor's count is in its ``findings.json``)."""
    if summary.get("mode") != "full":
        return None
    n = (summary.get("split_sizes") or {}).get("train")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None
