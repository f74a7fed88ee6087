"""The doctor: runs the runbook's stages on a model and its data and names the cause of a
collapse."""

from gatrank.doctor.judge import Judgement, judge_run
from gatrank.doctor.report import (
    CAUSES,
    DOCTOR_THRESHOLDS,
    VERDICTS,
    Cause,
    DoctorOptions,
    DoctorReport,
    Stage,
)
from gatrank.doctor.run import diagnose, diagnose_history

__all__ = [
    "CAUSES",
    "DOCTOR_THRESHOLDS",
    "VERDICTS",
    "Cause",
    "Stage",
    "DoctorOptions",
    "DoctorReport",
    "diagnose",
    "diagnose_history",
    "Judgement",
    "judge_run",
]
