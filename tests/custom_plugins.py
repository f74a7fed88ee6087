"""A user's own models and losses, loaded by import string in the tests
(``custom_plugins:Name``; pytest puts tests/ on the import path)."""

from __future__ import annotations

import torch
from torch import nn
from torch_geometric.nn import GATConv, GCNConv, global_add_pool, global_mean_pool

from gatrank.losses import pairwise_rank_loss


class SumModel(nn.Module):
    """Sum-pooled features through a small MLP: a stand-in for someone's own architecture."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_channels, 16), nn.ReLU(), nn.Linear(16, 1))

    def forward(self, batch) -> torch.Tensor:
        return self.mlp(global_add_pool(batch.x, batch.batch, batch.num_graphs)).squeeze(-1)


def make_sum_model(width: int) -> nn.Module:
    """A factory whose one argument is not called in_channels: called as factory(in_channels)."""
    return SumModel(width)


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


# --------------------------------------------------------------------------- models the PyG way
# forward(x, edge_index, ..., batch) with tensors by name, constructors with required arguments


class PyGGCN(nn.Module):
    """A GCN written as PyG's examples write one: required constructor arguments (in_channels,
    hidden_channels, out_channels) and ``forward(x, edge_index, batch)``."""

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = GCNConv(in_channels, hidden_channels)
        self.conv2 = GCNConv(hidden_channels, hidden_channels)
        self.lin = nn.Linear(hidden_channels, out_channels)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor,
                batch: torch.Tensor) -> torch.Tensor:
        h = self.conv1(x, edge_index).relu()
        h = self.conv2(h, edge_index).relu()
        return self.lin(global_add_pool(h, batch))  # (G, out_channels)


class NoBatchPool(nn.Module):
    """The classic bug: pooling without the ``batch`` vector, one score for the whole batch."""

    def __init__(self, in_channels: int, hidden_channels: int = 16) -> None:
        super().__init__()
        self.conv = GCNConv(in_channels, hidden_channels)
        self.lin = nn.Linear(hidden_channels, 1)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor,
                batch: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv(x, edge_index).relu()
        return self.lin(global_mean_pool(h, None)).squeeze(-1)  # (1,): batch left out


class PerNode(nn.Module):
    """A node-level model used for a graph-level task: no readout, one score per node."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.conv = GCNConv(in_channels, 8)
        self.lin = nn.Linear(8, 1)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        return self.lin(self.conv(x, edge_index).relu())  # (N, 1)


class EdgeAware(nn.Module):
    """A model that reads edge features: ``edge_dim`` required, ``forward`` takes ``edge_attr``
    and asks for ``num_graphs``."""

    def __init__(self, in_channels: int, edge_dim: int, hidden_channels: int = 8) -> None:
        super().__init__()
        self.edge_dim = edge_dim
        self.conv = GATConv(in_channels, hidden_channels, edge_dim=edge_dim)
        self.lin = nn.Linear(hidden_channels, 1)

    def forward(self, x, edge_index, edge_attr, batch, num_graphs: int) -> torch.Tensor:
        h = self.conv(x, edge_index, edge_attr).relu()
        return self.lin(global_mean_pool(h, batch, num_graphs)).squeeze(-1)
