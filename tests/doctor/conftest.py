"""Fixtures the doctor's test files share: the zoo's graphs (the checks every report must pass
are tests/conftest.py's ``check_report``, which the loop zoo's tests use too)."""

from __future__ import annotations

import pytest

from gatrank.doctor.zoo import zoo_graphs


@pytest.fixture(scope="session")
def zoo_set():
    return zoo_graphs(128)
