"""The runbook's robust pairwise ranking loss (RankNet-style logistic loss over pairs).

For scores ``s`` and targets ``y`` of one batch, every ordered pair (i, j) with
``y_i - y_j > margin_eps`` and ``|y_i - y_j| > tie_eps`` is *valid*; the loss is
``softplus(-(s_i - s_j) / temperature)`` averaged over valid pairs (or weighted by
``|y_i - y_j|``). A model that predicts a constant therefore has loss ``ln 2`` exactly.

When no pair is valid the loss is a zero that is still connected to ``scores``, so
``backward()`` works and yields zero gradients instead of failing or silently detaching.

Above :data:`CHUNK_THRESHOLD` items the pair terms are computed in row blocks by a custom
autograd function (:func:`pairwise_rank_loss_chunked`) that accumulates the gradient in the
same pass instead of keeping ``(B, B)`` intermediates for backward: the same loss and
gradients, with memory ``O(B * block_rows)`` instead of ``O(B^2)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from gatrank.config import Config
from gatrank.plugins import load_object

__all__ = [
    "LossOutput",
    "LossFn",
    "make_loss_fn",
    "pairwise_rank_loss",
    "pairwise_rank_loss_chunked",
    "PairwiseRankLoss",
    "valid_pair_mask",
    "LN2",
    "CHUNK_THRESHOLD",
]

LN2 = math.log(2.0)
"""Loss of a constant model: softplus(0) = ln 2 for every valid pair."""

CHUNK_THRESHOLD = 256
"""Lists longer than this use the chunked computation, which is faster there and bounded in
memory (docs/benchmarks.md). Batches up to this size take the plain dense ``(B, B)`` autograd
path, which also supports double backward."""

BLOCK_ELEMENTS = 1 << 21
"""Pair terms per block in the chunked computation (8 MB per float32 temporary)."""


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
        targets: ``[B]`` (or ``[B, 1]``) targets.
        margin_eps: ``y_i - y_j`` must exceed this.
        tie_eps: pairs with ``|y_i - y_j| <= tie_eps`` are ties and excluded.
        group: optional ``[B]`` (or ``[B, 1]``) integer group ids; pairs form only inside a
            group.
    """
    targets = _one_per_item(targets, "targets")
    dy = targets[:, None] - targets[None, :]  # (B, B)
    mask = (dy > margin_eps) & (dy.abs() > tie_eps)
    if group is not None:
        group = _one_per_item(group, "group")
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
        scores: ``[B]`` or ``[B, 1]`` model scores (any float dtype; computed in float32 or
            wider); the gradient flows back to the tensor passed, whichever shape it has.
        targets: ``[B]`` or ``[B, 1]`` targets; larger should rank higher.
        margin_eps: minimum target gap for a pair to count.
        tie_eps: target gaps at or below this are ties and ignored.
        temperature: score gaps are divided by this.
        weight_by_diff: weight pairs by ``|y_i - y_j|`` (a weighted mean) instead of a plain mean.
        group: optional ``[B]`` (or ``[B, 1]``) group ids; pairs form only within a group.

    Returns:
        :class:`LossOutput` with the scalar loss and the number of valid pairs.

    Raises:
        ValueError: scores, targets or group of another shape (``[B, 2]``...: named, with
            what is accepted), of different lengths, or ``temperature <= 0``.

    Shapes:
        scores, targets, group: ``[B]`` or ``[B, 1]`` each (read as ``[B]``); internally
        ``(B, B)`` pair matrices, or row blocks of them above :data:`CHUNK_THRESHOLD` items
        (see :func:`pairwise_rank_loss_chunked`).
    """
    scores, targets, group = _check_args(scores, targets, temperature, group)
    if scores.shape[0] > CHUNK_THRESHOLD:
        return pairwise_rank_loss_chunked(
            scores,
            targets,
            margin_eps=margin_eps,
            tie_eps=tie_eps,
            temperature=temperature,
            weight_by_diff=weight_by_diff,
            group=group,
        )
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


def _one_per_item(t: Tensor, name: str) -> Tensor:
    """``t`` as ``[B]``: a ``[B]`` or ``[B, 1]`` tensor (one value per item), else an error
    naming its shape and what is accepted."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a tensor, [B] or [B, 1] (one value per item); got "
                        f"{type(t).__name__}")
    if t.dim() == 1:
        return t
    if t.dim() == 2 and t.shape[1] == 1:
        return t.reshape(-1)  # a view: gradients flow back to the [B, 1] tensor
    raise ValueError(
        f"{name} must be [B] or [B, 1] (one value per item); got shape {tuple(t.shape)}"
        + (f": {t.shape[1]} columns per item, pick the one to rank by" if t.dim() == 2
           else "")
    )


def _check_args(scores: Tensor, targets: Tensor, temperature: float, group: Tensor | None
                ) -> tuple[Tensor, Tensor, Tensor | None]:
    """``scores``, ``targets`` and ``group`` as ``[B]`` tensors (each may be ``[B]`` or
    ``[B, 1]``), or an error naming what is wrong."""
    s, y = _one_per_item(scores, "scores"), _one_per_item(targets, "targets")
    if y.shape != s.shape:
        raise ValueError(
            f"scores and targets must have the same length, one target per score; got scores "
            f"{tuple(scores.shape)} and targets {tuple(targets.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if group is not None:
        g = _one_per_item(group, "group")
        if g.shape != s.shape:
            raise ValueError(f"group must have shape {tuple(s.shape)} (or [B, 1]), got "
                             f"{tuple(group.shape)}")
        group = g
    return s, y, group


def _block_terms(s: Tensor, y: Tensor, group: Tensor | None, rows: slice, opts: dict) -> tuple:
    """Negated score gaps ``-z``, pair weights ``w`` (0 where invalid) and the valid mask.

    All three are ``(b, B)`` for a block of ``b`` rows; ``z_ij = (s_i - s_j) / temperature``.
    """
    dy = y[rows, None] - y[None, :]  # (b, B)
    margin, tie = opts["margin_eps"], opts["tie_eps"]
    if margin >= 0:
        # dy > margin >= 0 makes |dy| = dy, so valid_pair_mask's test is one comparison here
        mask = dy > max(margin, tie)
    else:
        mask = (dy > margin) & (dy.abs() > tie)
    if group is not None:
        mask &= group[rows, None] == group[None, :]
    neg_z = s[None, :] - s[rows, None]  # (b, B)
    if opts["temperature"] != 1.0:
        neg_z /= opts["temperature"]
    w = torch.where(mask, dy.abs_(), 0.0) if opts["weight_by_diff"] else mask.to(s.dtype)
    return neg_z, w, mask


class _ChunkedPairLoss(torch.autograd.Function):
    """Weighted mean of ``softplus(-z_ij)`` over valid pairs, computed block by block.

    The gradient is accumulated in the same pass (``d softplus(-z)/dz = -sigmoid(-z)``) as two
    ``[B]`` vectors, so no ``(B, B)`` tensor outlives its block and backward is ``O(B)``.
    """

    @staticmethod
    def forward(ctx, s, y, group, block_rows, opts):  # noqa: D102
        want_grad = ctx.needs_input_grad[0]
        num = s.new_zeros(())
        den = s.new_zeros(())
        count = torch.zeros((), dtype=torch.long, device=s.device)
        # sum_j w_ij sigmoid(-z_ij) per i (row_push) and per j (col_push); see backward
        row_push = torch.zeros_like(s) if want_grad else None
        col_push = torch.zeros_like(s) if want_grad else None
        for i0 in range(0, s.shape[0], block_rows):
            rows = slice(i0, i0 + block_rows)
            neg_z, w, mask = _block_terms(s, y, group, rows, opts)
            num += (F.softplus(neg_z) * w).sum()
            den += w.sum()
            count += mask.sum()
            if want_grad:
                g = neg_z.sigmoid_().mul_(w)  # (b, B)
                row_push[rows] += g.sum(dim=1)
                col_push += g.sum(dim=0)
        direction = col_push - row_push if want_grad else None  # dL/ds up to 1 / (den * T)
        ctx.save_for_backward(direction, den)
        ctx.temperature = opts["temperature"]
        ctx.mark_non_differentiable(count)
        loss = num / den if bool(den > 0) else num
        return loss, count

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss, _grad_count):  # noqa: D102
        direction, den = ctx.saved_tensors
        if not bool(den > 0):
            return torch.zeros_like(direction), None, None, None, None
        return direction * (grad_loss / (den * ctx.temperature)), None, None, None, None


def pairwise_rank_loss_chunked(
    scores: Tensor,
    targets: Tensor,
    *,
    margin_eps: float = 0.0,
    tie_eps: float = 1e-6,
    temperature: float = 1.0,
    weight_by_diff: bool = False,
    group: Tensor | None = None,
    block_rows: int | None = None,
) -> LossOutput:
    """:func:`pairwise_rank_loss` computed in row blocks with memory ``O(B * block_rows)``.

    Same arguments, loss and gradients (up to float summation order). Targets and groups are
    labels: no gradient flows to them. Supports first derivatives only (no double backward).

    Args:
        block_rows: rows of the ``(B, B)`` pair matrix per block; default
            ``BLOCK_ELEMENTS // B`` (at least 1).

    Shapes:
        scores, targets, group: ``[B]`` or ``[B, 1]`` each; temporaries ``(block_rows, B)``.
    """
    scores, targets, group = _check_args(scores, targets, temperature, group)
    n = scores.shape[0]
    if block_rows is None:
        block_rows = max(1, BLOCK_ELEMENTS // max(n, 1))
    if block_rows < 1:
        raise ValueError(f"block_rows must be >= 1, got {block_rows}")
    work_dtype = torch.promote_types(scores.dtype, torch.float32)
    opts = {
        "margin_eps": margin_eps,
        "tie_eps": tie_eps,
        "temperature": temperature,
        "weight_by_diff": weight_by_diff,
    }
    loss, count = _ChunkedPairLoss.apply(
        scores.to(work_dtype), targets.detach().to(work_dtype), group, block_rows, opts
    )
    return LossOutput(loss=loss, num_pairs=int(count))


class PairwiseRankLoss(torch.nn.Module):
    """Module form of :func:`pairwise_rank_loss`; ``forward(scores, targets, group=None)``
    (each ``[B]`` or ``[B, 1]``).

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


# --------------------------------------------------------------------------- the configured loss

LossFn = Callable[[Tensor, Tensor, "Tensor | None"], LossOutput]
"""What training calls: ``fn(scores [B], targets [B], group [B] or None) -> LossOutput``."""


def make_loss_fn(loss: str | Callable | None, config: Config) -> LossFn:
    """Adapt the configured loss to ``fn(scores, targets, group) -> LossOutput``.

    ``None``/empty gives gatrank's pairwise loss with the ``loss`` section's settings. An import
    string or callable is a user loss ``(scores, targets) -> scalar``; its valid-pair count is
    computed with the configured eps so batches without pairs are still visible.
    """
    lc = config.loss
    if not loss:
        def builtin(scores: Tensor, targets: Tensor, group: Tensor | None) -> LossOutput:
            return pairwise_rank_loss(
                scores,
                targets,
                margin_eps=lc.margin_eps,
                tie_eps=lc.tie_eps,
                temperature=lc.temperature,
                weight_by_diff=lc.weight_by_diff,
                group=group,
            )

        return builtin
    user = load_object(loss, what="loss") if isinstance(loss, str) else loss

    def wrapped(scores: Tensor, targets: Tensor, group: Tensor | None) -> LossOutput:
        out = user(scores, targets)
        if isinstance(out, LossOutput):
            return out
        if not isinstance(out, Tensor) or out.numel() != 1:
            raise TypeError(
                f"loss {loss!r} must return a scalar tensor, got "
                f"{type(out).__name__}{tuple(out.shape) if isinstance(out, Tensor) else ''}"
            )
        pairs = int(valid_pair_mask(targets, margin_eps=lc.margin_eps, tie_eps=lc.tie_eps,
                                    group=group).sum())
        return LossOutput(loss=out.reshape(()), num_pairs=pairs)

    return wrapped
