"""A user's own models, losses and datasets, loaded by import string in the tests
(``custom_plugins:Name``; pytest puts tests/ on the import path)."""

from __future__ import annotations

import pandas as pd
import torch
from torch import nn
from torch_geometric.data import Data, Dataset, InMemoryDataset
from torch_geometric.nn import GATConv, GCNConv, global_add_pool, global_mean_pool

from gatrank.data import featurize_smiles
from gatrank.datasets import default_manifest
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
# --------------------------------------------------------------------------- datasets
# A user's own PyG data, named by --dataset custom_plugins:<name>.


def hand_made_graphs(k: int = 6) -> list[Data]:
    """``k`` small graphs built by hand: a path of 3 + i % 3 nodes, features that tell them
    apart, y = i, ids g0, g1, ... (a function: called with no arguments by --dataset)."""
    graphs = []
    for i in range(k):
        n = 3 + i % 3
        src = torch.arange(n - 1)
        x = torch.stack([torch.arange(n, dtype=torch.float32) / n,
                         torch.full((n,), float(i))], dim=1)  # [n, 2]
        graphs.append(Data(x=x, edge_index=torch.stack([torch.cat([src, src + 1]),
                                                        torch.cat([src + 1, src])]),
                           y=torch.tensor([float(i)]), id=f"g{i}"))
    return graphs


class HandMadeDataset(InMemoryDataset):
    """An InMemoryDataset of :func:`hand_made_graphs`, kept in memory (no root folder)."""

    def __init__(self, k: int = 6) -> None:
        super().__init__(root=None)
        self.data, self.slices = self.collate(hand_made_graphs(k))


hand_made_list = hand_made_graphs()
"""A plain list of Data."""

hand_made_dataset = HandMadeDataset()
"""A dataset instance (not callable)."""


class ScaledGraphs(Dataset):
    """A PyG ``Dataset`` (not in memory) whose graphs come from ``get`` through a
    ``transform``; ``get(broken_at)`` raises, as a corrupt file on disk would."""

    def __init__(self, broken_at: int = -1) -> None:
        super().__init__(root=None, transform=lambda d: Data(x=d.x * 10, edge_index=d.edge_index,
                                                              y=d.y, id=d.id))
        self.graphs, self.broken_at = hand_made_graphs(), broken_at

    def len(self) -> int:
        return len(self.graphs)

    def get(self, idx: int) -> Data:
        if idx == self.broken_at:
            raise OSError(f"graph file {idx} is truncated")
        return self.graphs[idx]


def scaled_with_a_broken_graph() -> ScaledGraphs:
    return ScaledGraphs(broken_at=3)


def broken_dataset() -> list[Data]:
    """A dataset function with a bug in it."""
    raise RuntimeError("the dataset's download folder is missing")


class EmbeddedMolecules(InMemoryDataset):
    """The first ``n`` molecules of gatrank's embedded chembl-activity data as a user would
    build them: gatrank's featurizer for ``x``/``edge_attr``, ``y`` the activity, ``id`` and
    ``smiles`` per graph."""

    def __init__(self, n: int = 64) -> None:
        super().__init__(root=None)
        table = pd.read_csv(default_manifest(), dtype={"id": str}).head(n)
        graphs = []
        for gid, smi, y in zip(table["id"], table["smiles"], table["y"], strict=True):
            g = featurize_smiles(smi)
            g.y, g.id = torch.tensor([float(y)]), gid
            graphs.append(g)
        self.data, self.slices = self.collate(graphs)
