"""The healthy zoo: set-ups users really run (PyG's own example models, the ranking losses users
write, a PyG dataset made with from_smiles, groups, the three embedded data sets) get no cause
on seeds 0, 1 and 2 — the healthy twin of the fault zoo (tests/doctor/test_zoo.py).

Marked slow (each diagnosis trains for seconds on 128 graphs); one run per test so
pytest-xdist spreads them.
"""

from __future__ import annotations

import pytest

from gatrank.config import RECOMMENDED
from gatrank.doctor.healthy import HEALTHY, diagnose_healthy, healthy_graphs

_GRAPHS: dict[str, object] = {}


def _graphs(name: str):
    if name not in _GRAPHS:
        _GRAPHS[name] = healthy_graphs(HEALTHY[name], 128)
    return _GRAPHS[name]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", list(HEALTHY))
def test_healthy_setups_get_no_cause_on_any_seed(name, seed, check_report):
    entry = HEALTHY[name]
    report = diagnose_healthy(entry, seed, graphs=_graphs(name))
    assert report.verdict == "healthy", report.format_text()
    assert report.causes == []
    check_report(report)
    stages = {s.name: s.status for s in report.stages}
    assert stages["overfit"] == "passed", report.format_text()
    # a stage that ran says what it found; one whose sample is too small says so in a note
    assert stages.get("held-out") in ("ok", "weak", "cannot judge")
    # the user's own settings are judged only where they differ from the runbook's
    # recommended config
    own = {k: v for k, v in entry.config.items() if v != RECOMMENDED.get(k)}
    assert ("your_settings" in stages) == bool(own)
    # no row of gatrank's defaults presented as the user's: only keys the user set
    assert {d["key"] for d in report.config_diff
            if d["key"].startswith(("training.", "model."))} <= set(entry.config)
    if not entry.model and not entry.loss and not entry.config:  # gatrank's own setup
        assert report.runbook_verdict["passed"]
        assert [s.name for s in report.stages] == ["data", "loss", "model", "overfit",
                                                   "held-out"]
