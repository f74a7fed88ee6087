"""Fixtures of the gatrank.training tests: a tiny synthetic data set and the uninterrupted run
every resume test must reproduce."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_training import tiny

from gatrank.data import load_graphs
from gatrank.datasets import write_dataset
from gatrank.training import train


@pytest.fixture(scope="session")
def manifest(tmp_path_factory) -> Path:
    return write_dataset("synthetic", tmp_path_factory.mktemp("syn"), n=24, seed=0)


@pytest.fixture(scope="session")
def graphs(manifest):
    return load_graphs(manifest)


@pytest.fixture(scope="session")
def reference(graphs, tmp_path_factory):
    """The uninterrupted run every resume test must reproduce exactly."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("reference")
    return train(tiny(), graphs=graphs, progress=False, out_dir=out), out
