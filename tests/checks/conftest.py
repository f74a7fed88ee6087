"""Small hand-built graphs shared by the checks' tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch_geometric.data import Data


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
