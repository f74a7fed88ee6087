"""User code with the bugs of public bug reports: the models and losses the fault zoo puts in
place of the diagnosed ones (``gatrank.doctor.buggy:Name``).

Each is written the way a user writes it (plain torch and PyG: ``GCNConv``/``GATConv`` layers,
``global_mean_pool``, ``nn.Linear`` heads, a constructor ``(in_channels, hidden_channels=64)``
that gatrank's ``build_model`` fills in, a PyG-style ``forward(x, edge_index, batch)``) and has
exactly ONE realistic bug, named in its docstring with what a person sees. Nothing here imports
the doctor: the doctor must find these bugs from the outside, as it would in a user's project.

Shapes: ``x [N, F]``, ``edge_index [2, E]``, ``batch [N]`` (node -> graph), scores ``[G]``
(except where the bug is the shape).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import GATConv, GCNConv, global_mean_pool

__all__ = [
    "LayerNormScoreHead",
    "SoftmaxScoreGNN",
    "OffsetReluHead",
    "ZeroInitGNN",
    "PoolWithoutBatch",
    "NodeScorer",
    "PositionalGNN",
    "broadcast_mse_loss",
    "mse_loss",
]


class _TwoGCN(nn.Module):
    """Two GCN layers with ReLU: the encoder most tutorials start from."""

    def __init__(self, in_channels: int, hidden_channels: int) -> None:
        super().__init__()
        self.conv1 = GCNConv(in_channels, hidden_channels)
        self.conv2 = GCNConv(hidden_channels, hidden_channels)

    def encode(self, x: Tensor, edge_index: Tensor) -> Tensor:
        x = self.conv1(x, edge_index).relu()
        return self.conv2(x, edge_index).relu()  # (N, hidden)


class LayerNormScoreHead(_TwoGCN):
    """GCN, mean pooling and an MLP head that ends ``Linear(h, 1) -> LayerNorm(1)``.

    Bug: "normalize the output for stable training". A LayerNorm over a dimension of size 1
    subtracts the one value from itself: every score is exactly its bias, 0 at init, and no
    gradient passes back through it. What a person sees: every prediction is 0.0, the loss
    sits at ln 2, the gradient norm is 0 and nothing changes with the learning rate.
    The LayerNorm is ``head.3``.
    """

    def __init__(self, in_channels: int, hidden_channels: int = 64) -> None:
        super().__init__(in_channels, hidden_channels)
        self.head = nn.Sequential(
            nn.Linear(hidden_channels, hidden_channels),
            nn.ReLU(),
            nn.Linear(hidden_channels, 1),
            nn.LayerNorm(1),
        )

    def forward(self, x: Tensor, edge_index: Tensor, batch: Tensor) -> Tensor:
        h = global_mean_pool(self.encode(x, edge_index), batch)  # (G, hidden)
        return self.head(h).squeeze(-1)  # (G,)


class SoftmaxScoreGNN(nn.Module):
    """Two GAT layers, mean pooling, ``Linear(h, 1)`` and a softmax over its output.

    Bug: the classification habit of ending in ``softmax(dim=-1)``, kept on a one-unit
    output: a softmax over one value is exactly 1.0, and its gradient is exactly 0. What a
    person sees: every score is 1.0, the loss is flat at ln 2 from the first step. The last
    module is ``lin_out``; the softmax is in ``forward``, after it.
    """

    def __init__(self, in_channels: int, hidden_channels: int = 64, heads: int = 4) -> None:
        super().__init__()
        self.conv1 = GATConv(in_channels, hidden_channels, heads=heads)  # heads concatenated
        self.conv2 = GATConv(hidden_channels * heads, hidden_channels, heads=1)
        self.lin_out = nn.Linear(hidden_channels, 1)

    def forward(self, x: Tensor, edge_index: Tensor, batch: Tensor) -> Tensor:
        x = F.elu(self.conv1(x, edge_index))
        x = F.elu(self.conv2(x, edge_index))
        h = global_mean_pool(x, batch)  # (G, hidden)
        return torch.softmax(self.lin_out(h), dim=-1).squeeze(-1)  # (G,), all 1.0


class OffsetReluHead(_TwoGCN):
    """GCN, mean pooling and ``Linear(h, 1)``, made non-negative by a ReLU after an offset.

    Bug: two habits in one line. "Scores must be non-negative" (a ``torch.relu`` on the score)
    and "scores are relative to the 1000 nM reference" (an offset that belonged to the targets,
    IC50s in nM, not to the scores): ``torch.relu(self.lin_out(h) - 1000)``. A freshly
    initialised ``lin_out`` gives values near 0, so every input of the ReLU is near -1000:
    every score is exactly 0 and no gradient reaches any weight. What a person sees: every
    prediction 0.0, the loss flat at ln 2, gradient norm 0 from the first step, and no layer of
    the model with a dead output: the ReLU is a function call in ``forward``, not a module;
    the last module, ``lin_out``, still varies from graph to graph.
    """

    def __init__(self, in_channels: int, hidden_channels: int = 64) -> None:
        super().__init__(in_channels, hidden_channels)
        self.lin_out = nn.Linear(hidden_channels, 1)

    def forward(self, x: Tensor, edge_index: Tensor, batch: Tensor) -> Tensor:
        h = global_mean_pool(self.encode(x, edge_index), batch)  # (G, hidden)
        return torch.relu(self.lin_out(h) - 1000).squeeze(-1)  # (G,), all 0.0


class ZeroInitGNN(_TwoGCN):
    """GCN, mean pooling and a two-layer MLP head, every weight initialised to zero.

    Bug: "deterministic initialisation, so runs are reproducible": ``nn.init.zeros_`` on
    every weight (biases keep their defaults). Every unit of every layer is identical and
    every graph gets the same output; the gradients that would break the symmetry are zero.
    What a person sees: constant scores from the first epoch, gradient norm ~0, a loss at
    ln 2 that no learning rate moves. The first zeroed weight is ``conv1.lin.weight``.
    """

    def __init__(self, in_channels: int, hidden_channels: int = 64) -> None:
        super().__init__(in_channels, hidden_channels)
        self.lin1 = nn.Linear(hidden_channels, hidden_channels)
        self.lin2 = nn.Linear(hidden_channels, 1)
        for name, param in self.named_parameters():
            if name.endswith("weight"):
                nn.init.zeros_(param)

    def forward(self, x: Tensor, edge_index: Tensor, batch: Tensor) -> Tensor:
        h = global_mean_pool(self.encode(x, edge_index), batch)  # (G, hidden)
        return self.lin2(self.lin1(h).relu()).squeeze(-1)  # (G,)


class PoolWithoutBatch(_TwoGCN):
    """GCN and a linear score of the mean-pooled nodes, pooled without the ``batch`` vector.

    Bug: ``global_mean_pool(x, None)`` (the ``forward`` of a single-graph tutorial, which
    never took ``batch``): the mean runs over every node of the whole batch, so a batch of G
    graphs gets ONE score, shape ``[1]``. What a person sees: a loss shape error, or, where
    the score is broadcast against G targets, every graph of a batch with the same score.
    """

    def __init__(self, in_channels: int, hidden_channels: int = 64) -> None:
        super().__init__(in_channels, hidden_channels)
        self.lin = nn.Linear(hidden_channels, 1)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        h = global_mean_pool(self.encode(x, edge_index), None)  # (1, hidden): all nodes
        return self.lin(h).squeeze(-1)  # (1,)


class NodeScorer(_TwoGCN):
    """GCN and a linear score per node, with no readout.

    Bug: the node-classification model reused for a graph-level task: no pooling, so the
    model returns one score per node, shape ``[N]``. What a person sees: a shape error
    between N scores and G targets (or, where it is silently reshaped, scores that belong to
    atoms of the first graphs, not to graphs).
    """

    def __init__(self, in_channels: int, hidden_channels: int = 64) -> None:
        super().__init__(in_channels, hidden_channels)
        self.lin = nn.Linear(hidden_channels, 1)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        return self.lin(self.encode(x, edge_index)).squeeze(-1)  # (N,)


class PositionalGNN(_TwoGCN):
    """A learned embedding of each node's position in its graph added to its features, then
    GCN, mean pooling and a linear score.

    Bug: the position table has ``max_nodes=32`` rows ("no molecule has more than 32 atoms"):
    a batch holding a graph with more nodes raises ``IndexError: index out of range in self``
    inside ``nn.Embedding``, while batches of small graphs train fine. What a person sees: a
    crash after some batches (on the embedded chembl-activity data, 27-38 atoms per molecule,
    in the very first batch of 32).
    """

    def __init__(self, in_channels: int, hidden_channels: int = 64, max_nodes: int = 32) -> None:
        super().__init__(hidden_channels, hidden_channels)
        self.lin_in = nn.Linear(in_channels, hidden_channels)
        self.pos_emb = nn.Embedding(max_nodes, hidden_channels)
        self.lin = nn.Linear(hidden_channels, 1)

    def forward(self, x: Tensor, edge_index: Tensor, batch: Tensor) -> Tensor:
        counts = torch.bincount(batch)  # (G,) nodes per graph
        first = torch.cumsum(counts, 0) - counts  # (G,) index of each graph's first node
        pos = torch.arange(x.size(0), device=x.device) - first[batch]  # (N,) 0..n_g-1
        h = self.lin_in(x) + self.pos_emb(pos)  # IndexError where n_g > max_nodes
        h = global_mean_pool(self.encode(h, edge_index), batch)  # (G, hidden)
        return self.lin(h).squeeze(-1)  # (G,)


def broadcast_mse_loss(scores: Tensor, targets: Tensor) -> Tensor:
    """A regression loss that broadcasts ``[G, 1]`` scores against ``[G]`` targets.

    Bug: ``scores.view(-1, 1)``, the shape of the model's head output in the user's own loop,
    against targets of shape ``[G]``: ``F.mse_loss`` broadcasts them to ``[G, G]`` (torch
    warns, "Using a target size ... different to the input size") and averages
    ``(s_i - t_j) ** 2`` over every pair, a value that does not change when the scores are
    permuted: it cannot tell which score belongs to which target. What a person sees: every
    score drifts to the mean target, the ranking stays at chance.
    """
    return F.mse_loss(scores.view(-1, 1), targets)  # (G, 1) vs (G,) -> (G, G)


def mse_loss(scores: Tensor, targets: Tensor) -> Tensor:
    """The plain mean squared error, ``[G]`` against ``[G]``: correct, and scale-sensitive.

    Not a bug by itself; under targets in raw units (an IC50 in nM, spread in the thousands)
    its gradient is in the thousands too, which is the fault ``raw_unit_targets``.
    """
    return F.mse_loss(scores, targets)
