"""The alternatives gatrank is measured against, written the way users write them.

- :func:`allrank_style_loss`: allRank's RankNet pair construction (``allrank/models/losses/
  rankNet.py``): every ordered index pair as a Python list from ``itertools.product``, then a
  gather, a mask and ``BCEWithLogits``; normalised like gatrank (a weighted mean) so the two must
  agree to rounding.
- :func:`double_loop_loss`: the textbook double loop over pairs.
- :func:`pairwise_accuracy_quadratic`, :func:`kendall_tau_b_quadratic`: the O(N^2) definitions.
- :func:`bare_pyg_epochs`: a plain PyG training loop with no diagnostics (and, given validation
  graphs, the per-epoch model selection every full-training loop has), one epoch per step.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "allrank_style_loss",
    "double_loop_loss",
    "pairwise_accuracy_quadratic",
    "kendall_tau_b_quadratic",
    "bare_pyg_epochs",
]


def allrank_style_loss(
    scores: Tensor,
    targets: Tensor,
    *,
    margin_eps: float = 0.0,
    tie_eps: float = 1e-6,
    temperature: float = 1.0,
    weight_by_diff: bool = False,
) -> Tensor:
    """Pairwise logistic loss over pairs listed with ``itertools.product`` (allRank's way).

    Shapes: scores, targets ``[B]``; the pair list has ``B^2`` entries.
    """
    n = scores.shape[0]
    candidates = list(itertools.product(range(n), repeat=2))
    pairs_true = targets[None][:, candidates]  # (1, B*B, 2), as allRank indexes y_true
    pairs_pred = scores[None][:, candidates]
    true_diffs = pairs_true[:, :, 0] - pairs_true[:, :, 1]
    pred_diffs = (pairs_pred[:, :, 0] - pairs_pred[:, :, 1]) / temperature
    the_mask = (true_diffs > margin_eps) & (true_diffs.abs() > tie_eps)
    logits = pred_diffs[the_mask]
    weight = true_diffs[the_mask].abs() if weight_by_diff else torch.ones_like(logits)
    per_pair = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits),
                                                  reduction="none")
    return (per_pair * weight).sum() / weight.sum()


def double_loop_loss(
    scores: Tensor,
    targets: Tensor,
    *,
    margin_eps: float = 0.0,
    tie_eps: float = 1e-6,
    temperature: float = 1.0,
    weight_by_diff: bool = False,
) -> Tensor:
    """The same loss as two nested Python loops over ``(i, j)``."""
    n = scores.shape[0]
    total = scores.new_zeros(())
    weight_sum = 0.0
    y = targets.tolist()
    for i in range(n):
        for j in range(n):
            dy = y[i] - y[j]
            if dy > margin_eps and abs(dy) > tie_eps:
                w = abs(dy) if weight_by_diff else 1.0
                total = total + w * F.softplus(-(scores[i] - scores[j]) / temperature)
                weight_sum += w
    return total / weight_sum


def pairwise_accuracy_quadratic(s: np.ndarray, y: np.ndarray, tie_eps: float,
                                block: int = 1024) -> float:
    """Pairwise accuracy by its definition over all pairs (row blocks keep memory small)."""
    correct, total = 0.0, 0
    for i0 in range(0, len(s), block):
        dy = y[i0:i0 + block, None] - y[None, :]
        ds = s[i0:i0 + block, None] - s[None, :]
        counted = dy > tie_eps
        total += int(counted.sum())
        correct += float(((ds > 0) & counted).sum()) + 0.5 * float(((ds == 0) & counted).sum())
    return correct / total if total else 0.5


def kendall_tau_b_quadratic(s: np.ndarray, y: np.ndarray, block: int = 1024) -> float:
    """Kendall's tau-b by definition, ``(C - D) / sqrt((n0 - n1) (n0 - n2))``, in integers."""
    con_minus_dis, untied_s, untied_y = 0, 0, 0
    for i0 in range(0, len(s), block):
        rows = slice(i0, i0 + block)
        ds = np.sign(s[rows, None] - s[None, :]).astype(np.int64)
        dy = np.sign(y[rows, None] - y[None, :]).astype(np.int64)
        # every unordered pair appears twice (i, j) and (j, i): halve at the end
        con_minus_dis += int((ds * dy).sum())
        untied_s += int((ds != 0).sum())
        untied_y += int((dy != 0).sum())
    denom = np.sqrt(float(untied_s // 2) * float(untied_y // 2))
    return (con_minus_dis // 2) / denom if denom else 0.0


def bare_pyg_epochs(
    model: torch.nn.Module,
    graphs: Sequence,
    *,
    batch_size: int,
    learning_rate: float,
    epochs: int,
    loss_kwargs: dict,
    grad_clip: float,
    shuffle: bool,
    seed: int,
    device: torch.device,
    val_graphs: Sequence = (),
) -> Iterator[None]:
    """A plain PyG training loop as a generator: the first ``next()`` sets up (optimizer,
    loader, collated validation graphs), each later one trains one epoch; the step after the
    last epoch loads the best weights and ends it.

    Forward, gatrank's loss (the thing being trained, not a diagnostic), backward, the
    runbook's gradient clipping, Adam step; no metrics, logging or checkpoints. With
    ``val_graphs``, model selection as any full-training loop has it: after every epoch the
    validation graphs are scored (collated once), their Spearman computed with scipy, and the
    best weights kept in memory. A generator so that a benchmark can time its epochs in turns
    with another loop's (:mod:`benchmarks.training`).
    """
    from scipy.stats import spearmanr
    from torch_geometric.loader import DataLoader

    from gatrank.losses import pairwise_rank_loss

    model = model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    loader = DataLoader(list(graphs), batch_size=min(batch_size, len(graphs)), shuffle=shuffle,
                        generator=torch.Generator().manual_seed(seed))
    val = [b.to(device) for b in DataLoader(list(val_graphs), batch_size=256)]
    best, best_state = -float("inf"), None
    yield
    for _ in range(epochs):
        model.train()
        for batch in loader:
            batch = batch.to(device)
            optimizer.zero_grad()
            loss = pairwise_rank_loss(model(batch), batch.y, **loss_kwargs).loss
            loss.backward()
            if grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
        if val:
            model.eval()
            with torch.no_grad():
                scores = torch.cat([model(b).reshape(-1) for b in val]).cpu().numpy()
            targets = torch.cat([b.y.reshape(-1) for b in val]).cpu().numpy()
            rho = spearmanr(scores, targets).statistic
            if rho > best:
                best = rho
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if device.type == "cuda":
            torch.cuda.synchronize()
        yield
    if best_state is not None:
        model.load_state_dict(best_state)
