"""Measurements taken during training at the logging cadence.

Cheap by design: each is one pass over the parameters or one forward pass without gradients.
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch
from torch import nn

__all__ = ["layer_name", "grad_norms", "embedding_stats"]


def layer_name(param_name: str) -> str:
    """Group a parameter name into its layer: ``convs.1.att_src`` → ``convs.1``,
    ``score_head.0.weight`` → ``score_head.0``, ``linear.bias`` → ``linear``."""
    parts = param_name.split(".")
    if len(parts) > 2 and parts[1].isdigit():
        return ".".join(parts[:2])
    return parts[0] if len(parts) > 1 else param_name


def grad_norms(model: nn.Module) -> tuple[float, dict[str, float]]:
    """Total L2 norm of all gradients and the norm per layer (see :func:`layer_name`).

    Parameters without a gradient contribute 0 (they appear with 0.0 so a frozen or detached
    layer is visible rather than missing).
    """
    sq: dict[str, float] = defaultdict(float)
    for name, p in model.named_parameters():
        key = layer_name(name)
        if p.grad is None:
            sq[key] += 0.0
        else:
            sq[key] += float(p.grad.detach().double().pow(2).sum())
    per_layer = {k: math.sqrt(v) for k, v in sq.items()}
    return math.sqrt(sum(sq.values())), per_layer


@torch.no_grad()
def embedding_stats(embeddings: torch.Tensor) -> dict[str, float]:
    """Spread of pooled graph embeddings ``[G, D]`` (the runbook's Step 2C check).

    ``emb_mean``/``emb_std`` are over all entries (what the runbook prints); ``emb_graph_std``
    is the mean over dimensions of the std across graphs: near 0 means every graph gets the
    same embedding, whatever the per-graph spread of its entries.
    """
    e = embeddings.detach().double()
    across = e.std(dim=0, unbiased=False).mean() if e.shape[0] > 1 else e.new_zeros(())
    return {
        "emb_mean": float(e.mean()),
        "emb_std": float(e.std(unbiased=False)),
        "emb_graph_std": float(across),
    }
