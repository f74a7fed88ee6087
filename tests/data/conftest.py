"""Fixtures of the gatrank.data tests."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tiny_graphs import X4, save_pt


@pytest.fixture
def files(tmp_path):
    """Two good graphs and one file per kind of breakage, in tmp_path."""
    save_pt(tmp_path / "a.pt")
    save_pt(tmp_path / "b.pt", x=X4 + 1)
    data = (tmp_path / "a.pt").read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "corrupt.json").write_text('{"x": [[1, 2], ')
    (tmp_path / "notes.txt").write_text("not a graph")
    save_pt(tmp_path / "no_nodes.pt", x=torch.zeros(0, 3), edge_index=torch.zeros(2, 0).long())
    save_pt(tmp_path / "no_edges.pt", edge_index=torch.zeros(2, 0, dtype=torch.long))
    save_pt(tmp_path / "out_of_range.pt", edge_index=torch.tensor([[0, 1], [1, 12]]))
    np.savez(tmp_path / "float_edges.npz", x=X4.numpy(), edge_index=np.array([[0, 0.5], [1, 2]]))
    save_pt(tmp_path / "wide.pt", x=torch.ones(4, 5))
    x_nan = X4.clone()
    x_nan[2, 1] = math.nan
    save_pt(tmp_path / "nan_x.pt", x=x_nan)
    save_pt(tmp_path / "inf_edge.pt", edge_attr=torch.tensor([[1.0]] * 7 + [[math.inf]]))
    return tmp_path
