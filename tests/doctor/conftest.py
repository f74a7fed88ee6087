"""Fixtures the doctor's test files share: the zoo's graphs and the checks every report must
pass."""

from __future__ import annotations

import json

import pytest

from gatrank.doctor import CAUSES, VERDICTS
from gatrank.doctor.zoo import zoo_graphs


def _check_report(report) -> None:
    """Every report: a known verdict, every cause known and backed by numbers and a fix."""
    assert report.verdict in VERDICTS
    d = json.loads(json.dumps(report.to_dict()))
    assert d["verdict"] == report.verdict
    for c in d["causes"]:
        assert c["id"] in CAUSES
        assert c["fix"] and c["evidence"]
        assert any(ch.isdigit() for ch in c["evidence"]), c  # evidence carries measurements
    text = report.format_text()
    assert all(c.id in text for c in report.causes)


@pytest.fixture
def check_report():
    """The checks of ``_check_report``, for a test to call on each report it makes."""
    return _check_report


@pytest.fixture(scope="session")
def zoo_set():
    return zoo_graphs(128)
