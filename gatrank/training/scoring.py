"""Scoring graphs with a model: predictions (scores, targets, pooled embeddings) and the ranking
metrics of a split, with graphs collated once when they are scored every epoch."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch_geometric.loader import DataLoader

from gatrank.metrics import embedding_stats, grouped_metrics, ranking_metrics
from gatrank.model import GATRanker, LinearBaseline, check_scores, score_batch

__all__ = ["COLLATE_ONCE_MAX", "Collated", "collate", "predict", "split_metrics"]

# gatrank's own models score as ``head(embed(batch)).squeeze(-1)``: predict() gets both the
# scores and the embeddings from one forward pass instead of two.
_HEAD_OF_EMBED = {GATRanker: "score_head", LinearBaseline: "linear"}


class Collated(list):
    """Graphs collated into PyG batches on the device once, for an evaluation run every epoch."""


COLLATE_ONCE_MAX = 4096
"""Training sets up to this many graphs are collated once for their per-epoch uses (a second
copy of them in memory); larger ones are collated batch by batch when needed."""


def collate(graphs: Sequence, device: torch.device, batch_size: int = 256) -> Collated:
    loader = DataLoader(list(graphs), batch_size=batch_size, shuffle=False)
    return Collated(batch.to(device) for batch in loader)


@torch.no_grad()
def predict(
    model: nn.Module, graphs: Sequence, device: torch.device, batch_size: int = 256
) -> dict:
    """Scores for ``graphs`` in eval mode: ``{"scores", "targets", "embeddings"}`` as tensors.
    Raises :class:`~gatrank.model.ScoreShapeError` when the model's scores are not one per
    graph.

    ``embeddings`` is the pooled graph embedding when the model has an ``embed`` method (the
    runbook's Step 2C hook), else ``None``.
    """
    model.eval()
    scores, targets, embs, groups = [], [], [], []
    has_embed = callable(getattr(model, "embed", None))
    head_name = _HEAD_OF_EMBED.get(type(model))
    head = getattr(model, head_name) if head_name else None
    batches = graphs if isinstance(graphs, Collated) else DataLoader(
        list(graphs), batch_size=batch_size, shuffle=False
    )
    for batch in batches:
        batch = batch.to(device)
        if has_embed:
            emb = model.embed(batch)
            s = (check_scores(head(emb), batch, model=model) if head is not None
                 else score_batch(model, batch))
            embs.append(emb.float().cpu())
        else:
            s = score_batch(model, batch)
        scores.append(s.float().cpu())
        targets.append(batch.y.reshape(-1).float().cpu())
        group = getattr(batch, "group", None)
        groups.append(group.reshape(-1).cpu() if group is not None else None)
    grouped = bool(groups) and all(g is not None for g in groups) and bool(
        (torch.cat(groups) >= 0).any())
    return {
        "scores": torch.cat(scores) if scores else torch.zeros(0),
        "targets": torch.cat(targets) if targets else torch.zeros(0),
        "embeddings": torch.cat(embs) if embs else None,
        "groups": torch.cat(groups) if grouped else None,
    }


def split_metrics(model, graphs, device, tie_eps: float, prefix: str = "") -> dict[str, float]:
    """The ranking metrics of ``graphs`` (keys with ``prefix``); with groups, the ranking ones
    (pairwise accuracy, Spearman, Kendall, NDCG) are the mean over groups, as the loss pairs
    graphs within groups only, while the score statistics stay over all graphs."""
    out = predict(model, graphs, device)
    metrics = ranking_metrics(out["scores"], out["targets"], tie_eps=tie_eps)
    if out["groups"] is not None:
        within = grouped_metrics(out["scores"], out["targets"], out["groups"].tolist(),
                                 tie_eps=tie_eps)["mean"]
        metrics.update({k: v for k, v in within.items() if not k.startswith("score_")})
    if out["embeddings"] is not None:
        metrics.update(embedding_stats(out["embeddings"]))
    return {f"{prefix}{k}": v for k, v in metrics.items()}
