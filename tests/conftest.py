"""Shared test set-up: keep gatrank's on-disk caches out of the user's home directory."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="session")
def _session_cache_dir(tmp_path_factory: pytest.TempPathFactory):
    """One cache per test session (per xdist worker): isolated, yet shared so the embedded
    data sets are featurized once rather than in every test."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GATRANK_CACHE_DIR", str(tmp_path_factory.mktemp("gatrank-cache")))
        yield
