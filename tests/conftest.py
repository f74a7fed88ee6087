"""Shared test set-up: gatrank's on-disk caches kept out of the user's home directory, and
fixtures more than one test file uses."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gatrank.datasets import write_dataset


@pytest.fixture(autouse=True, scope="session")
def _session_cache_dir(tmp_path_factory: pytest.TempPathFactory):
    """One cache per test session (per xdist worker): isolated, yet shared so the embedded
    data sets are featurized once rather than in every test."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GATRANK_CACHE_DIR", str(tmp_path_factory.mktemp("gatrank-cache")))
        yield


@pytest.fixture
def one_thread():
    """Tiny models run fastest single-threaded on a shared machine (``pytestmark =
    pytest.mark.usefixtures("one_thread")`` in a test file applies it to every test there)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64 molecules of the embedded chembl-activity data as a manifest (the notebook and browser
    tests run the notebooks on it)."""
    return write_dataset("chembl-activity", tmp_path_factory.mktemp("tiny"), n=64)
