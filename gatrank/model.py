"""Graph ranking models: the GAT ranker and a linear baseline.

Both map a PyG batch of graphs to one score per graph (``[num_graphs]``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.nn import (
    GATConv,
    GATv2Conv,
    global_add_pool,
    global_max_pool,
    global_mean_pool,
)

from gatrank.config import ModelConfig
from gatrank.plugins import load_object

__all__ = ["GATRanker", "LinearBaseline", "pool", "build_model"]

_POOLS = {"mean": global_mean_pool, "max": global_max_pool, "add": global_add_pool}


def pool(x: Tensor, batch: Tensor, how: str, size: int | None = None) -> Tensor:
    """Global pooling of node features ``[N, F]`` to graph features ``[G, F]`` (or ``[G, 2F]``
    for ``mean+max``)."""
    if how == "mean+max":
        return torch.cat([global_mean_pool(x, batch, size), global_max_pool(x, batch, size)], -1)
    return _POOLS[how](x, batch, size)


class GATRanker(nn.Module):
    """Graph attention network that scores whole graphs for ranking.

    Architecture: ``num_layers`` GAT layers (PyG ``GATConv`` or ``GATv2Conv``; heads
    concatenated), ELU between layers, residual connections where widths match, dropout on
    features and attention, global pooling, then the runbook's score head
    ``Linear(pool_dim, hidden) → LayerNorm(hidden) → ReLU → Linear(hidden, 1)``.

    Args:
        in_channels: node-feature width F.
        config: a :class:`~gatrank.config.ModelConfig`.

    Shapes:
        batch.x ``[N, F]``, batch.edge_index ``[2, E]``, batch.batch ``[N]`` →
        scores ``[G]``; :meth:`embed` → ``[G, pool_dim]``.
    """

    def __init__(self, in_channels: int, config: ModelConfig | None = None) -> None:
        super().__init__()
        cfg = config or ModelConfig()
        self.config = cfg
        self.in_channels = in_channels
        conv_cls = GATConv if cfg.conv == "gat" else GATv2Conv
        per_head = cfg.hidden_dim // cfg.heads
        self.convs = nn.ModuleList()
        width = in_channels
        for _ in range(cfg.num_layers):
            self.convs.append(
                conv_cls(width, per_head, heads=cfg.heads, concat=True, dropout=cfg.dropout)
            )
            width = cfg.hidden_dim
        self.dropout = nn.Dropout(cfg.dropout)
        self.pool_dim = cfg.hidden_dim * (2 if cfg.pooling == "mean+max" else 1)
        layers: list[nn.Module] = [nn.Linear(self.pool_dim, cfg.hidden_dim)]
        if cfg.head != "plain":
            layers.append(nn.LayerNorm(cfg.hidden_dim))
        layers += [nn.ReLU(), nn.Linear(cfg.hidden_dim, 1)]
        if cfg.head == "sigmoid":
            layers.append(nn.Sigmoid())
        elif cfg.head == "tanh":
            layers.append(nn.Tanh())
        self.score_head = nn.Sequential(*layers)

    def node_embeddings(self, batch) -> list[Tensor]:
        """Node embeddings after each GAT layer: ``num_layers`` tensors ``[N, hidden]``."""
        x, edge_index = batch.x, batch.edge_index
        outs = []
        for i, conv in enumerate(self.convs):
            h = conv(self.dropout(x), edge_index)
            if self.config.residual and i > 0:
                h = h + x
            x = torch.nn.functional.elu(h)
            outs.append(x)
        return outs

    def embed(self, batch) -> Tensor:
        """Pooled graph embedding ``[G, pool_dim]`` (the runbook's Step 2C hook)."""
        x = self.node_embeddings(batch)[-1]
        return pool(x, batch.batch, self.config.pooling, batch.num_graphs)

    def forward(self, batch) -> Tensor:
        return self.score_head(self.embed(batch)).squeeze(-1)  # (G,)


class LinearBaseline(nn.Module):
    """Mean-pooled input node features → one linear score: the runbook's "simpler baseline".

    Shapes:
        batch.x ``[N, F]`` → scores ``[G]``.
    """

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.linear = nn.Linear(in_channels, 1)

    def embed(self, batch) -> Tensor:
        return global_mean_pool(batch.x, batch.batch, batch.num_graphs)

    def forward(self, batch) -> Tensor:
        return self.linear(self.embed(batch)).squeeze(-1)


def build_model(in_channels: int, config: ModelConfig | None = None, spec: str = "") -> nn.Module:
    """Build the model named by ``spec``: empty or ``gat`` → :class:`GATRanker`, ``linear`` →
    :class:`LinearBaseline`, otherwise an import string ``package.module:Name`` of a callable
    taking ``in_channels`` and returning an ``nn.Module`` with ``forward(batch) -> [G]``."""
    if spec in ("", "gat"):
        return GATRanker(in_channels, config)
    if spec == "linear":
        return LinearBaseline(in_channels)
    factory = load_object(spec, what="model")
    model = factory(in_channels)
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"--model {spec}: calling it with in_channels={in_channels} returned "
            f"{type(model).__name__}, not a torch.nn.Module"
        )
    return model
