"""Tiny hand-built graphs and manifests the data tests write into tmp_path."""

from __future__ import annotations

import torch
from torch_geometric.data import Data

# A 4-cycle with 3 node features, both edge directions: [2, 8].
X4 = torch.arange(12, dtype=torch.float32).view(4, 3)
EI4 = torch.tensor([[0, 1, 1, 2, 2, 3, 3, 0], [1, 0, 2, 1, 3, 2, 0, 3]])


def edge_set(ei: torch.Tensor) -> set[tuple[int, int]]:
    return set(map(tuple, ei.t().tolist()))


def save_pt(path, x=X4, edge_index=EI4, **extra) -> str:
    torch.save(Data(x=x, edge_index=edge_index, **extra), path)
    return path.name


def write_manifest(tmp_path, text: str, name: str = "manifest.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path
