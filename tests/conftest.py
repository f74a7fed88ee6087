"""Shared test set-up: gatrank's on-disk caches kept out of the user's home directory, and
fixtures more than one test file uses."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch_geometric.data import Data

import gatrank.io
from gatrank.datasets import write_dataset
from gatrank.doctor import CAUSES, VERDICTS


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


def _path_graph(n: int, x: torch.Tensor, y: float, group: int = -1) -> Data:
    src = torch.arange(n - 1)
    ei = torch.cat([torch.stack([src, src + 1]), torch.stack([src + 1, src])], 1)
    return Data(x=x, edge_index=ei, y=torch.tensor([y]), group=torch.tensor([group]))


def _graphs(k: int = 6, n: int = 5, f: int = 4, seed: int = 0) -> list[Data]:
    gen = torch.Generator().manual_seed(seed)
    return [_path_graph(n, torch.randn(n, f, generator=gen), float(i)) for i in range(k)]


@pytest.fixture
def path_graph() -> Callable[..., Data]:
    """``path_graph(n, x, y, group=-1)``: a path of ``n`` nodes, both edge directions."""
    return _path_graph


@pytest.fixture
def make_graphs() -> Callable[..., list[Data]]:
    """``make_graphs(k=6, n=5, f=4, seed=0)``: ``k`` paths with random features, y = 0..k-1."""
    return _graphs


@pytest.fixture
def crash_on_fsync() -> Callable[[pytest.MonkeyPatch], None]:
    """``crash_on_fsync(monkeypatch)``: from then on an atomic write's bytes reach the temporary
    file, then the 'machine dies' before the rename."""

    def install(monkeypatch: pytest.MonkeyPatch) -> None:
        def crash(fd):
            raise OSError("simulated crash mid-write")

        monkeypatch.setattr(gatrank.io.os, "fsync", crash)

    return install


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
