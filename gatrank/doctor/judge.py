"""A run read back from its files, judged as it was judged when it ran: the runbook's verdict
and the doctor's reading of its records, with the :class:`gatrank.Monitor`'s
``findings.json`` where the Monitor wrote one, so that ``gatrank verdict RUN`` and 03_overfit's
``metrics`` parameter say what ``monitor.verdict()`` and ``monitor.diagnose()`` said.

Without findings, a ``gatrank train --out`` run is judged by what its ``summary.json`` tells:
full training by the graphs of its training split (over
:data:`~gatrank.checks.verdict.OVERFIT_MAX_GRAPHS`, the runbook's Step 3), the overfit test by
its own thresholds, both read with the config the summary stores.
"""

from __future__ import annotations

from dataclasses import dataclass

from gatrank.checks.verdict import Verdict, evaluate_run
from gatrank.config import Config
from gatrank.doctor.report import DoctorReport
from gatrank.doctor.run import diagnose_history
from gatrank.training import TrainResult
from gatrank.training.findings_file import RunFindings
from gatrank.training.history import epoch_graphs, run_config, run_findings

__all__ = ["Judgement", "judge_run"]


@dataclass(frozen=True)
class Judgement:
    """The verdict and the doctor's reading of one run, and what they were read with."""

    verdict: Verdict
    """:func:`~gatrank.checks.verdict.evaluate_run` on the records."""
    reading: DoctorReport
    """:func:`~gatrank.doctor.diagnose_history` on the same records, on the same verdict."""
    findings: RunFindings | None
    """The Monitor's ``findings.json`` they read, None where there was none (or a malformed
    one, warned about)."""


def judge_run(result: TrainResult, *, config: Config | None = None) -> Judgement:
    """Judge a run: one :func:`~gatrank.training.history.read_run` read back, or one
    :func:`~gatrank.training.train` just returned (which has no findings).

    Args:
        result: the run; its ``summary["source"]`` (the log read) locates ``findings.json``.
        config: the settings the doctor reads the run with, in place of the ones its files
            hold (the findings' config, else the summary's, else gatrank's defaults).
    """
    found = run_findings(result)
    if found is not None:
        graphs, cfg, findings = found.graphs_per_epoch, found.config, found.findings
    else:
        graphs, cfg, findings = epoch_graphs(result.summary), run_config(result.summary), None
    cfg = config if config is not None else cfg
    return Judgement(
        verdict=evaluate_run(result.history, graphs_per_epoch=graphs),
        reading=diagnose_history(result.history, config=cfg, findings=findings,
                                 graphs_per_epoch=graphs),
        findings=found)
