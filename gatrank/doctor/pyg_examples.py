"""Healthy user code: PyTorch Geometric's own graph-level examples (pyg-team/pytorch_geometric
``examples/``), changed only to give one score per graph, and the ranking losses users write.

The healthy zoo (:mod:`gatrank.doctor.healthy`) diagnoses these as a user would pass them
(``gatrank.doctor.pyg_examples:GIN``): the doctor must find nothing wrong with any of them, on
any seed. Each model keeps its example's layers, readout, dropout and widths; the one change is
the last layer's width (1: a score, where the example classifies) and no ``log_softmax``.
Nothing here imports the doctor.

Shapes: ``x [N, F]``, ``edge_index [2, E]``, ``edge_attr [E, D]``, ``batch [N]`` (node ->
graph); every model returns scores ``[G]`` or ``[G, 1]``; every loss takes ``scores [B]`` and
``targets [B]`` and returns a scalar.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import InMemoryDataset
from torch_geometric.nn import (
    MLP,
    AttentiveFP,
    GATv2Conv,
    GINConv,
    GraphConv,
    SAGEConv,
    TopKPooling,
    global_add_pool,
    global_max_pool,
    global_mean_pool,
)
from torch_geometric.utils import from_smiles

__all__ = [
    "SmilesDataset",
    "chembl_from_smiles",
    "chembl_from_smiles_full",
    "GIN",
    "SAGEMax",
    "attentive_fp",
    "GATv2Net",
    "TopKNet",
    "hinge_loss",
    "listnet_loss",
    "lambdarank_loss",
    "mse_loss",
]


class GIN(nn.Module):
    """``examples/mutag_gin.py``: GIN layers with MLPs (batch norm inside), sum readout, and an
    MLP head with dropout 0.5 (functional, inside PyG's ``MLP``)."""

    def __init__(self, in_channels: int, hidden_channels: int = 32, out_channels: int = 1,
                 num_layers: int = 5) -> None:
        super().__init__()
        self.convs = nn.ModuleList()
        for _ in range(num_layers):
            mlp = MLP([in_channels, hidden_channels, hidden_channels])
            self.convs.append(GINConv(nn=mlp, train_eps=False))
            in_channels = hidden_channels
        self.mlp = MLP([hidden_channels, hidden_channels, out_channels], norm=None, dropout=0.5)

    def forward(self, x: Tensor, edge_index: Tensor, batch: Tensor) -> Tensor:
        for conv in self.convs:
            x = conv(x, edge_index).relu()
        x = global_add_pool(x, batch)  # (G, hidden)
        return self.mlp(x)  # (G, 1)


class SAGEMax(nn.Module):
    """GraphSAGE layers with ReLU and a max readout, then a linear score (the PyG
    ``GraphSAGE`` pattern of the graph-classification examples)."""

    def __init__(self, in_channels: int, hidden_channels: int = 64, num_layers: int = 3) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            [SAGEConv(in_channels if k == 0 else hidden_channels, hidden_channels)
             for k in range(num_layers)])
        self.lin = nn.Linear(hidden_channels, 1)

    def forward(self, x: Tensor, edge_index: Tensor, batch: Tensor) -> Tensor:
        for conv in self.convs:
            x = conv(x, edge_index).relu()
        return self.lin(global_max_pool(x, batch)).squeeze(-1)  # (G,)


def attentive_fp(in_channels: int, edge_dim: int, dropout: float = 0.2) -> nn.Module:
    """``examples/attentive_fp.py``'s model: ``AttentiveFP(hidden 200, 2 layers, 2 timesteps,
    dropout 0.2)`` with one output."""
    return AttentiveFP(in_channels, 200, 1, edge_dim=edge_dim, num_layers=2, num_timesteps=2,
                       dropout=dropout)


class GATv2Net(nn.Module):
    """Three GATv2 layers (4 heads, concatenated) with ELU and dropout 0.1 on the inputs,
    mean readout, a linear score."""

    def __init__(self, in_channels: int, hidden_channels: int = 64, heads: int = 4) -> None:
        super().__init__()
        self.convs = nn.ModuleList()
        width = in_channels
        for _ in range(3):
            self.convs.append(GATv2Conv(width, hidden_channels // heads, heads=heads))
            width = hidden_channels
        self.lin = nn.Linear(hidden_channels, 1)

    def forward(self, x: Tensor, edge_index: Tensor, batch: Tensor) -> Tensor:
        for conv in self.convs:
            x = F.elu(conv(F.dropout(x, p=0.1, training=self.training), edge_index))
        return self.lin(global_mean_pool(x, batch)).squeeze(-1)  # (G,)


class TopKNet(nn.Module):
    """``examples/proteins_topk_pool.py``'s ``Net``: three GraphConv + TopKPooling(0.8) blocks,
    max and mean readout after each, summed, and an MLP head with dropout 0.5; its last layer
    gives one score instead of class log-probabilities."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.conv1 = GraphConv(in_channels, 128)
        self.pool1 = TopKPooling(128, ratio=0.8)
        self.conv2 = GraphConv(128, 128)
        self.pool2 = TopKPooling(128, ratio=0.8)
        self.conv3 = GraphConv(128, 128)
        self.pool3 = TopKPooling(128, ratio=0.8)
        self.lin1 = nn.Linear(256, 128)
        self.lin2 = nn.Linear(128, 64)
        self.lin3 = nn.Linear(64, 1)

    def forward(self, data) -> Tensor:
        x, edge_index, batch = data.x, data.edge_index, data.batch
        x = F.relu(self.conv1(x, edge_index))
        x, edge_index, _, batch, _, _ = self.pool1(x, edge_index, None, batch)
        x1 = torch.cat([global_max_pool(x, batch), global_mean_pool(x, batch)], dim=1)
        x = F.relu(self.conv2(x, edge_index))
        x, edge_index, _, batch, _, _ = self.pool2(x, edge_index, None, batch)
        x2 = torch.cat([global_max_pool(x, batch), global_mean_pool(x, batch)], dim=1)
        x = F.relu(self.conv3(x, edge_index))
        x, edge_index, _, batch, _, _ = self.pool3(x, edge_index, None, batch)
        x3 = torch.cat([global_max_pool(x, batch), global_mean_pool(x, batch)], dim=1)
        x = x1 + x2 + x3  # (G, 256)
        x = F.relu(self.lin1(x))
        x = F.dropout(x, p=0.5, training=self.training)
        x = F.relu(self.lin2(x))
        return self.lin3(x).squeeze(-1)  # (G,)


# --------------------------------------------------------------------------- a dataset


class SmilesDataset(InMemoryDataset):
    """A PyG ``InMemoryDataset`` of molecules made the PyG way: ``from_smiles`` (integer atom
    and bond features, ``x [N, 9]``, ``edge_attr [E, 3]``) cast to float, as a user does to
    feed a model that expects float features; ``y [1]`` per graph."""

    def __init__(self, smiles: list[str], targets: list[float]) -> None:
        super().__init__(None)
        data_list = []
        for smi, y in zip(smiles, targets, strict=True):
            d = from_smiles(smi)
            d.x, d.edge_attr = d.x.float(), d.edge_attr.float()
            d.y = torch.tensor([float(y)])
            data_list.append(d)
        self.data, self.slices = self.collate(data_list)


def chembl_from_smiles(n: int = 256, seed: int = 0) -> SmilesDataset:
    """A seeded sample of ``n`` molecules of the embedded chembl-activity set as a
    :class:`SmilesDataset` (``gatrank.doctor.pyg_examples:chembl_from_smiles``)."""
    import numpy as np
    import pandas as pd

    from gatrank.datasets import dataset_manifest

    table = pd.read_csv(dataset_manifest("chembl-activity"))
    keep = np.sort(np.random.default_rng(seed).choice(len(table), min(n, len(table)),
                                                      replace=False))
    table = table.iloc[keep]
    return SmilesDataset(table["smiles"].tolist(), table["y"].tolist())


def chembl_from_smiles_full() -> SmilesDataset:
    """Every molecule of the embedded chembl-activity set as a :class:`SmilesDataset`."""
    return chembl_from_smiles(n=10**9)


# --------------------------------------------------------------------------- losses


def _pairs(targets: Tensor) -> Tensor:
    """``[B, B]`` mask of the pairs ``(i, j)`` with ``y_i > y_j``."""
    return targets[:, None] > targets[None, :]


def hinge_loss(scores: Tensor, targets: Tensor, margin: float = 1.0) -> Tensor:
    """Margin ranking (RankSVM): ``max(0, margin - (s_i - s_j))`` over pairs with
    ``y_i > y_j``; its optimum is every ordered pair at least ``margin`` apart."""
    s, y = scores.view(-1), targets.view(-1)
    mask = _pairs(y)
    if not mask.any():
        return s.sum() * 0.0
    return F.relu(margin - (s[:, None] - s[None, :]))[mask].mean()


def listnet_loss(scores: Tensor, targets: Tensor) -> Tensor:
    """ListNet (top-one probabilities): cross-entropy between ``softmax(targets)`` and
    ``softmax(scores)``; its minimum is at ``scores = targets + c``, so the scores' spread is
    the targets' own."""
    s, y = scores.view(-1), targets.view(-1)
    return -(F.softmax(y, dim=0) * F.log_softmax(s, dim=0)).sum()


def lambdarank_loss(scores: Tensor, targets: Tensor) -> Tensor:
    """A LambdaRank-style loss: RankNet's pairwise logistic loss, each pair weighted by the
    change in NDCG of swapping the two (gains ``2^rel - 1`` on targets min-max scaled to
    [0, 1])."""
    s, y = scores.view(-1), targets.view(-1)
    rel = (y - y.min()) / (y.max() - y.min()).clamp_min(1e-12)
    gain = 2.0 ** rel - 1.0
    rank = torch.empty_like(s)
    rank[torch.argsort(s.detach(), descending=True)] = torch.arange(
        1, len(s) + 1, dtype=s.dtype, device=s.device)
    disc = 1.0 / torch.log2(1.0 + rank)
    ideal = (torch.sort(gain, descending=True).values
             / torch.log2(torch.arange(2, len(s) + 2, dtype=s.dtype, device=s.device))).sum()
    delta = ((gain[:, None] - gain[None, :]) * (disc[:, None] - disc[None, :])).abs()
    delta = delta / ideal.clamp_min(1e-12)
    mask = _pairs(y)
    if not mask.any():
        return s.sum() * 0.0
    return (delta[mask] * F.softplus(-(s[:, None] - s[None, :])[mask])).sum() / mask.sum()


def mse_loss(scores: Tensor, targets: Tensor) -> Tensor:
    """Regression as ranking: mean squared error on targets standardized within the batch
    (scores ``[B]``, flattened, so no broadcast)."""
    s, y = scores.view(-1), targets.view(-1)
    z = (y - y.mean()) / y.std().clamp_min(1e-12)
    return F.mse_loss(s, z)
