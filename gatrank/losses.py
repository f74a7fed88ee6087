"""The runbook's robust pairwise ranking loss (RankNet-style logistic loss over pairs).

For scores ``s`` and targets ``y`` of one batch, every ordered pair (i, j) with
``y_i - y_j > margin_eps`` and ``|y_i - y_j| > tie_eps`` is *valid*; the loss is
``softplus(-(s_i - s_j) / temperature)`` averaged over valid pairs (or weighted by
``|y_i - y_j|``). A model that predicts a constant therefore has loss ``ln 2`` exactly.

When no pair is valid the loss is a zero that is still connected to ``scores``, so
``backward()`` works and yields zero gradients instead of failing or silently detaching.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["LossOutput", "pairwise_rank_loss", "PairwiseRankLoss", "valid_pair_mask", "LN2"]

LN2 = math.log(2.0)
"""Loss of a constant model: softplus(0) = ln 2 for every valid pair."""


@dataclass
class LossOutput:
    loss: Tensor
    """Scalar loss, always with a gradient path to ``scores``."""
    num_pairs: int
    """How many valid pairs entered the loss."""


def valid_pair_mask(
    targets: Tensor,
    *,
    margin_eps: float = 0.0,
    tie_eps: float = 1e-6,
    group: Tensor | None = None,
) -> Tensor:
    """Boolean ``[B, B]`` mask of valid ordered pairs (i ranked above j).

    Args:
        targets: ``[B]`` targets.
        margin_eps: ``y_i - y_j`` must exceed this.
        tie_eps: pairs with ``|y_i - y_j| <= tie_eps`` are ties and excluded.
        group: optional ``[B]`` integer group ids; pairs form only inside a group.
    """
    dy = targets[:, None] - targets[None, :]  # (B, B)
    mask = (dy > margin_eps) & (dy.abs() > tie_eps)
    if group is not None:
        mask &= group[:, None] == group[None, :]
    return mask


def pairwise_rank_loss(
    scores: Tensor,
    targets: Tensor,
    *,
    margin_eps: float = 0.0,
    tie_eps: float = 1e-6,
    temperature: float = 1.0,
    weight_by_diff: bool = False,
    group: Tensor | None = None,
) -> LossOutput:
    """Robust pairwise logistic ranking loss.

    Args:
        scores: ``[B]`` model scores (any float dtype; computed in float32 or wider).
        targets: ``[B]`` targets; larger should rank higher.
        margin_eps: minimum target gap for a pair to count.
        tie_eps: target gaps at or below this are ties and ignored.
        temperature: score gaps are divided by this.
        weight_by_diff: weight pairs by ``|y_i - y_j|`` (a weighted mean) instead of a plain mean.
        group: optional ``[B]`` group ids; pairs form only within a group.

    Returns:
        :class:`LossOutput` with the scalar loss and the number of valid pairs.

    Shapes:
        scores, targets, group: ``[B]``; internally ``(B, B)`` pair matrices.
    """
    if scores.dim() != 1 or targets.shape != scores.shape:
        raise ValueError(
            f"scores and targets must both be 1-D of the same length; got scores "
            f"{tuple(scores.shape)} and targets {tuple(targets.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if group is not None and group.shape != scores.shape:
        raise ValueError(f"group must have shape {tuple(scores.shape)}, got {tuple(group.shape)}")
    work_dtype = torch.promote_types(scores.dtype, torch.float32)
    s = scores.to(work_dtype)
    y = targets.to(work_dtype)
    mask = valid_pair_mask(y, margin_eps=margin_eps, tie_eps=tie_eps, group=group)
    num_pairs = int(mask.sum())
    if num_pairs == 0:
        # Zero, but still a function of the scores: backward() gives exact zeros.
        return LossOutput(loss=(s * 0.0).sum(), num_pairs=0)
    ds = (s[:, None] - s[None, :]) / temperature  # (B, B)
    # softplus is computed stably by PyTorch (linear above its threshold), so gaps of 1e4
    # give a finite loss and finite gradients.
    per_pair = F.softplus(-ds[mask])  # (P,)
    if weight_by_diff:
        w = (y[:, None] - y[None, :])[mask].abs()  # (P,)
        loss = (per_pair * w).sum() / w.sum()
    else:
        loss = per_pair.mean()
    return LossOutput(loss=loss, num_pairs=num_pairs)


class PairwiseRankLoss(torch.nn.Module):
    """Module form of :func:`pairwise_rank_loss`; ``forward(scores, targets, group=None)``.

    Returns the scalar loss like any PyTorch loss and keeps the last batch's number of valid
    pairs in ``last_num_pairs``.
    """

    def __init__(
        self,
        margin_eps: float = 0.0,
        tie_eps: float = 1e-6,
        temperature: float = 1.0,
        weight_by_diff: bool = False,
    ) -> None:
        super().__init__()
        self.margin_eps = margin_eps
        self.tie_eps = tie_eps
        self.temperature = temperature
        self.weight_by_diff = weight_by_diff
        self.last_num_pairs = 0

    def forward(self, scores: Tensor, targets: Tensor, group: Tensor | None = None) -> Tensor:
        out = pairwise_rank_loss(
            scores,
            targets,
            margin_eps=self.margin_eps,
            tie_eps=self.tie_eps,
            temperature=self.temperature,
            weight_by_diff=self.weight_by_diff,
            group=group,
        )
        self.last_num_pairs = out.num_pairs
        return out.loss

    def extra_repr(self) -> str:
        return (
            f"margin_eps={self.margin_eps}, tie_eps={self.tie_eps}, "
            f"temperature={self.temperature}, weight_by_diff={self.weight_by_diff}"
        )
