"""Checks: in-training probes, static checks, the per-step checks the notebooks show, and the
runbook's verdict against its thresholds."""
