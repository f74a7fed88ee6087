"""A user's own model and loss, loaded by import string in the tests (``custom_plugins:Name``)."""

from __future__ import annotations

import torch
from torch import nn
from torch_geometric.nn import global_add_pool


class SumModel(nn.Module):
    """Sum-pooled features through a small MLP: a stand-in for someone's own architecture."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_channels, 16), nn.ReLU(), nn.Linear(16, 1))

    def forward(self, batch) -> torch.Tensor:
        return self.mlp(global_add_pool(batch.x, batch.batch, batch.num_graphs)).squeeze(-1)


def hinge_loss(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """A margin ranking loss over all ordered pairs: a stand-in for someone's own loss."""
    dy = targets[:, None] - targets[None, :]
    ds = scores[:, None] - scores[None, :]
    mask = dy > 0
    return torch.relu(1.0 - ds[mask]).mean() if mask.any() else scores.sum() * 0.0
