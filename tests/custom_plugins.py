"""A user's own models and losses, loaded by import string in the tests
(``custom_plugins:Name``; pytest puts tests/ on the import path)."""

from __future__ import annotations

import torch
from torch import nn
from torch_geometric.nn import global_add_pool, global_mean_pool

from gatrank.losses import pairwise_rank_loss


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


class DetachedScores(nn.Module):
    """A user model with the classic bug: the scores leave the autograd graph."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_channels, 1)

    def forward(self, batch) -> torch.Tensor:
        pooled = global_mean_pool(batch.x, batch.batch, batch.num_graphs)
        return self.linear(pooled).squeeze(-1).detach()


class MeanPooledLinear(nn.Module):
    """A user model too weak to memorize molecules: one linear map of mean-pooled atoms."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_channels, 1)

    def forward(self, batch) -> torch.Tensor:
        return self.linear(global_mean_pool(batch.x, batch.batch, batch.num_graphs)).squeeze(-1)


def reversed_margin_loss(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """A user loss with the sign of the score difference flipped."""
    dy = targets[:, None] - targets[None, :]
    ds = scores[:, None] - scores[None, :]
    return torch.relu(1.0 + ds[dy > 0]).mean()


class InterruptOnCall:
    """A user loss (``--loss custom_plugins:interrupting_loss``) that presses Ctrl-C on call N."""

    def __init__(self):
        self.calls, self.at = 0, None

    def __call__(self, scores, targets):
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        return pairwise_rank_loss(scores, targets)


interrupting_loss = InterruptOnCall()
