"""Static checks, run before (or without) training: they look at the data, the loss and the
untrained model, never at a training history.

- frozen parameters and parameters missing from the optimizer; whether the loss has a gradient
  path to every parameter;
- the loss's self-test on synthetic scores (prefers the right order, has a gradient, finite at
  large gaps) and the loss against ``ln 2`` (a constant model's loss under the pairwise loss);
- whether the loss is scale-invariant in the targets (the same on raw and standardized ``y``);
- valid pairs per batch, as the training loader forms batches (the one counter);
- in-memory graphs validated with the data module's per-graph checks and problem codes;
- the node features: per-feature statistics, and whether features and structure can tell
  graphs apart (1-WL colour refinement, the one WL hash).

Every function returns plain data (floats, dicts, lists, DataFrames); nothing prints or plots.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from gatrank.checks.probes import eval_mode
from gatrank.config import Config
from gatrank.data.graph_files import graph_problems
from gatrank.data.problems import DataProblem
from gatrank.losses import LN2, LossFn, valid_pair_mask
from gatrank.metrics import layer_name
from gatrank.model import score_batch

__all__ = [
    "frozen_parameters",
    "gradient_path",
    "check_loss",
    "check_configured_loss",
    "target_scale_sensitivity",
    "valid_pairs_per_batch",
    "pair_stats",
    "check_graphs",
    "feature_table",
    "wl_signatures",
    "feature_stats",
    "loss_ratio",
]


def frozen_parameters(
    model: nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> dict[str, Any]:
    """Parameters that cannot learn: ``requires_grad=False`` or not in the optimizer.

    Returns:
        ``{"frozen": [names], "not_in_optimizer": [names] (empty without an optimizer),
        "trainable_fraction": trainable weights / all weights (by element count; 1.0 for a
        model without parameters), "num_parameters": element count}``.
    """
    in_opt: set[int] | None = None
    if optimizer is not None:
        in_opt = {id(p) for g in optimizer.param_groups for p in g["params"]}
    frozen, missing = [], []
    total = trainable = 0
    for name, p in model.named_parameters():
        total += p.numel()
        if not p.requires_grad:
            frozen.append(name)
        elif in_opt is not None and id(p) not in in_opt:
            missing.append(name)
        else:
            trainable += p.numel()
    return {
        "frozen": frozen,
        "not_in_optimizer": missing,
        "trainable_fraction": trainable / total if total else 1.0,
        "num_parameters": total,
    }


def gradient_path(model: nn.Module, loss_fn: LossFn, batch) -> dict[str, Any]:
    """Whether the loss on ``batch`` reaches every trainable parameter with a gradient.

    One forward and backward pass in eval mode (no dropout) through ``loss_fn(scores, targets,
    group) -> LossOutput`` (see :func:`gatrank.training.make_loss_fn`); ``.grad`` fields are not
    touched.

    Returns:
        ``{"loss", "num_pairs", "requires_grad" (the loss is differentiable at all),
        "connected": [params with a nonzero gradient], "unused": [trainable params the loss
        does not depend on], "zero": [params whose gradient is exactly 0], "grad_norm",
        "grad_norm_per_layer", "finite" (loss and gradients are finite)}``.
    """
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    with eval_mode(model):
        scores = score_batch(model, batch)
        group = getattr(batch, "group", None)
        if group is not None and bool((group < 0).all()):
            group = None
        out = loss_fn(scores, batch.y.reshape(-1), group)
    loss = out.loss
    result: dict[str, Any] = {
        "loss": float(loss.detach()),
        "num_pairs": int(out.num_pairs),
        "requires_grad": bool(loss.requires_grad),
        "connected": [],
        "unused": [],
        "zero": [],
        "grad_norm": 0.0,
        "grad_norm_per_layer": {},
        "finite": bool(torch.isfinite(loss.detach()).all()),
    }
    if not params:
        return result
    if not loss.requires_grad:
        result["unused"] = [n for n, _ in params]
        return result
    grads = torch.autograd.grad(loss, [p for _, p in params], allow_unused=True)
    sq: dict[str, float] = defaultdict(float)
    for (name, _), g in zip(params, grads, strict=True):
        if g is None:
            result["unused"].append(name)
            continue
        s = float(g.double().pow(2).sum())
        if not math.isfinite(s):
            result["finite"] = False
        sq[layer_name(name)] += s
        (result["connected"] if s > 0 else result["zero"]).append(name)
    result["grad_norm"] = math.sqrt(sum(sq.values()))
    result["grad_norm_per_layer"] = {k: math.sqrt(v) for k, v in sq.items()}
    return result


def _large_gaps(loss_fn: LossFn, z: Tensor, y: Tensor) -> tuple[bool, float]:
    """``(finite, loss)`` at scores ``1e4 * z`` in the right and the reversed order: finite
    when both losses and their gradients are; ``loss`` is the reversed order's."""
    finite, loss = True, float("nan")
    for sign in (1.0, -1.0):
        big = (sign * z * 1e4).float().requires_grad_()
        out = loss_fn(big, y, None).loss
        loss = float(out.detach())
        finite = finite and math.isfinite(loss)
        if finite and out.requires_grad:
            (g,) = torch.autograd.grad(out, [big], allow_unused=True)
            finite = g is None or bool(torch.isfinite(g).all())
    return finite, loss


def _descent_agrees(grad: Tensor, y: Tensor) -> bool:
    """A gradient step from constant scores moves them towards the target order: Spearman
    of ``-grad`` with the targets > 0."""
    order = torch.argsort(torch.argsort(-grad.double()))
    rank_y = torch.argsort(torch.argsort(y))
    return float(torch.corrcoef(torch.stack([order.double(), rank_y.double()]))[0, 1]) > 0


def check_loss(
    loss_fn: LossFn, *, n: int = 16, seed: int = 0, scale: float = 1.0
) -> dict[str, Any]:
    """Test a loss on synthetic scores, the way the runbook's loss tests do (the doctor's loss
    stage and notebook 02's tests both read this).

    Targets are ``n`` distinct values ``0, scale, 2 scale, ...`` in random order (no ties; pass
    a ``scale`` above the loss's ``tie_eps``/``margin_eps``). The loss is evaluated on the
    perfect ordering (scores = standardized targets), its reverse and a constant; its gradient
    at the constant is taken with respect to the scores.

    Returns:
        ``{"loss_perfect", "loss_reversed", "loss_constant" (ln 2 for gatrank's loss),
        "prefers_correct_order" (perfect < reversed), "requires_grad", "has_gradient" (a
        nonzero gradient reaches the scores), "grad_norm", "num_pairs" (valid pairs the loss
        reports), "descent_agrees" (a gradient step from the constant moves scores towards the
        target order: Spearman of −grad with the targets > 0), "finite_large_gaps" (finite loss
        and gradient at score gaps of 1e4, in the right and the reversed order),
        "loss_large_gaps" (the loss at the reversed ones)}``.
    """
    gen = torch.Generator().manual_seed(seed)
    y = torch.randperm(n, generator=gen).double() * scale  # (n,) distinct targets
    z = (y - y.mean()) / y.std()

    def value(scores: Tensor) -> float:
        return float(loss_fn(scores, y.float(), None).loss.detach())

    const = torch.zeros(n, dtype=torch.float32, requires_grad=True)
    out = loss_fn(const, y.float(), None)
    requires_grad = bool(out.loss.requires_grad)
    grad = None
    if requires_grad:
        (grad,) = torch.autograd.grad(out.loss, [const], allow_unused=True)
    has_gradient = grad is not None and bool((grad != 0).any())
    finite, loss_large = _large_gaps(loss_fn, z, y.float())
    perfect, reverse = value(z.float()), value(-z.float())
    return {
        "loss_perfect": perfect,
        "loss_reversed": reverse,
        "loss_constant": float(out.loss.detach()),
        "prefers_correct_order": perfect < reverse,
        "requires_grad": requires_grad,
        "has_gradient": has_gradient,
        "grad_norm": float(grad.norm()) if grad is not None else 0.0,
        "num_pairs": int(out.num_pairs),
        "descent_agrees": has_gradient and _descent_agrees(grad, y),
        "finite_large_gaps": finite,
        "loss_large_gaps": loss_large,
    }


def check_configured_loss(loss_fn: LossFn, config: Config) -> dict[str, Any]:
    """:func:`check_loss` the way the doctor's loss stage and notebook 02 run it: targets
    spaced beyond the configured ``tie_eps``/``margin_eps`` (so every pair is valid), and the
    run's seed."""
    lc = config.loss
    return check_loss(loss_fn, scale=max(1.0, 2 * (lc.tie_eps + lc.margin_eps)),
                      seed=config.training.seed)


def _value_and_grad(loss_fn: LossFn, scores: Tensor, y: Tensor) -> tuple[float, Tensor]:
    """The loss at ``scores`` and its gradient with respect to them (zeros when there is
    none: a detached loss changes nothing here, the loss stage names it)."""
    s = scores.clone().requires_grad_()
    out = loss_fn(s, y, None).loss
    grad = None
    if out.requires_grad:
        (grad,) = torch.autograd.grad(out, [s], allow_unused=True)
    return float(out.detach()), torch.zeros_like(s) if grad is None else grad.detach()


def target_scale_sensitivity(
    loss_fn: LossFn, targets: Tensor | np.ndarray, *, max_items: int = 256, seed: int = 0,
    rtol: float = 1e-6,
) -> dict[str, Any]:
    """Whether a loss is scale-invariant in the targets: the loss and its gradient with respect
    to the scores, at fixed synthetic scores, on the real targets and on the same targets
    standardized (``(y - mean) / std``, same order).

    Scores are seeded standard-normal draws (one per target) and the perfect ordering (the
    standardized targets); targets beyond ``max_items`` are a seeded sample (kept in order), so
    the check costs one small batch. Everything runs in float64, so ``rtol`` measures the loss,
    not rounding. gatrank's pairwise loss is invariant (it reads target differences through
    ``sign`` and, with ``weight_by_diff``, a weighted *mean* of ``|y_i - y_j|``) unless
    ``tie_eps``/``margin_eps``, which are in target units, change which pairs count; an MSE is
    not: its value and gradient grow with the targets' units.

    Args:
        loss_fn: ``fn(scores, targets, group) -> LossOutput`` (see
            :func:`gatrank.losses.make_loss_fn`).
        targets: ``[N]`` finite targets, N >= 2.

    Returns:
        ``{"n", "mean", "std", "min", "max"`` (of the targets used), ``"loss_raw",
        "loss_standardized", "grad_norm_raw", "grad_norm_standardized"`` (at the random
        scores), ``"loss_change", "grad_change"`` (the largest change over both score vectors,
        ``|raw - standardized|`` (gradients: the norm of the difference), over the largest
        value (norm) of either; NaN when one is not finite), ``"invariant"`` (both changes
        <= ``rtol``)``}``.
    """
    y = torch.tensor(np.asarray(targets, dtype=np.float64)).reshape(-1)  # (N,), a copy
    if y.numel() < 2 or not bool(torch.isfinite(y).all()):
        raise ValueError(f"target_scale_sensitivity needs at least 2 finite targets, got "
                         f"{y.numel()} ({int((~torch.isfinite(y)).sum())} not finite)")
    gen = torch.Generator().manual_seed(seed)
    if y.numel() > max_items:
        y = y[torch.sort(torch.randperm(y.numel(), generator=gen)[:max_items]).values]
    std = float(y.std())
    z = (y - y.mean()) / (std or 1.0)  # (n,) standardized, same order
    random = torch.randn(y.numel(), generator=gen, dtype=torch.float64)
    result: dict[str, Any] = {"n": int(y.numel()), "mean": float(y.mean()), "std": std,
                              "min": float(y.min()), "max": float(y.max())}
    diffs, sizes = [], []  # per score vector: |raw - standardized|, max(|raw|, |standardized|)
    for scores in (random, z):
        raw, g_raw = _value_and_grad(loss_fn, scores, y)
        scaled, g_std = _value_and_grad(loss_fn, scores, z)
        result.setdefault("loss_raw", raw)
        result.setdefault("loss_standardized", scaled)
        result.setdefault("grad_norm_raw", float(g_raw.norm()))
        result.setdefault("grad_norm_standardized", float(g_std.norm()))
        diffs.append([abs(raw - scaled), float((g_raw - g_std).norm())])
        sizes.append([max(abs(raw), abs(scaled)), max(float(g_raw.norm()), float(g_std.norm()))])
    # relative to the largest value over both score vectors: rounding around an exact 0 (the
    # perfect order of a loss that standardizes y itself) is no change; np.max keeps a NaN
    top = np.max(sizes, axis=0)
    loss_change, grad_change = (np.max(diffs, axis=0) / np.where(top > 0, top, 1.0)).tolist()
    result.update(loss_change=loss_change, grad_change=grad_change,
                  invariant=bool(loss_change <= rtol and grad_change <= rtol))
    return result


def _group_or_none(group: Tensor | np.ndarray | None) -> Tensor | None:
    """``[N]`` group ids as a tensor, or None when there are no groups (all negative)."""
    if group is None:
        return None
    g = torch.as_tensor(np.asarray(group, dtype=np.int64)).reshape(-1)
    return None if bool((g < 0).all()) else g


def valid_pairs_per_batch(
    targets: Tensor | np.ndarray,
    batch_size: int,
    *,
    group: Tensor | np.ndarray | None = None,
    margin_eps: float = 0.0,
    tie_eps: float = 1e-6,
    seed: int = 0,
    shuffle: bool = True,
) -> np.ndarray:
    """Valid pairs in each batch of one epoch, as the training loader forms the batches.

    With ``shuffle`` the batches are those of the first epoch of a ``DataLoader(shuffle=True)``
    with a generator seeded with ``seed``, as :mod:`gatrank.training` builds its loader (and
    notebook 02 scores its batches): ``batch_size`` graphs each, the last batch smaller.

    Args:
        targets: ``[N]`` targets of the training graphs.
        group: ``[N]`` group ids (negative: no groups); pairs form only inside a group.

    Returns:
        ``(num_batches,)`` int64 counts of pairs with ``y_i - y_j`` beyond the eps.
    """
    y = torch.as_tensor(np.asarray(targets, dtype=np.float64)).reshape(-1)
    g = _group_or_none(group)
    loader = torch.utils.data.DataLoader(range(y.numel()), batch_size=max(1, batch_size),
                                         shuffle=shuffle,
                                         generator=torch.Generator().manual_seed(seed))
    counts = [int(valid_pair_mask(y[idx], margin_eps=margin_eps, tie_eps=tie_eps,
                                  group=None if g is None else g[idx]).sum())
              for idx in loader]  # idx: (b,) positions, in the training loader's order
    return np.asarray(counts, dtype=np.int64)


def pair_stats(
    targets: Tensor,
    batch_size: int,
    *,
    margin_eps: float = 0.0,
    tie_eps: float = 1e-6,
    group: Tensor | None = None,
    seed: int = 0,
    shuffle: bool = True,
) -> dict[str, Any]:
    """Valid pairs per batch for one epoch (:func:`valid_pairs_per_batch`), summarized.

    Returns:
        ``{"batches", "batches_without_pairs", "fraction_without_pairs", "pairs_mean",
        "pairs_min", "pairs_all" (valid pairs over the whole set as one batch)}``.
    """
    counts = valid_pairs_per_batch(targets, batch_size, group=group, margin_eps=margin_eps,
                                   tie_eps=tie_eps, seed=seed, shuffle=shuffle)
    y = torch.as_tensor(np.asarray(targets, dtype=np.float64)).reshape(-1)
    every = int(valid_pair_mask(y, margin_eps=margin_eps, tie_eps=tie_eps,
                                group=_group_or_none(group)).sum())
    n = len(counts)
    without = int((counts == 0).sum())
    return {
        "batches": n,
        "batches_without_pairs": without,
        "fraction_without_pairs": without / n if n else 1.0,
        "pairs_mean": float(counts.mean()) if n else 0.0,
        "pairs_min": int(counts.min()) if n else 0,
        "pairs_all": every,
    }


def check_graphs(graphs: Sequence) -> list[DataProblem]:
    """Validate in-memory graphs the way :func:`gatrank.data.load_graphs` validates files: the
    data module's per-graph checks and codes (see :func:`gatrank.data.graph_files.graph_problems`;
    NaN/Inf in ``x``, ``edge_attr`` or ``y``, graphs without nodes or edges, malformed edges).

    Returns:
        :class:`gatrank.data.DataProblem` s (``line`` and ``file`` None, ``id`` the graph's
        ``gid`` or position); empty when every graph is usable.
    """
    return graph_problems(graphs)


def _node_features(graphs: Sequence) -> Tensor:
    """Node features of every node of every graph, ``(total nodes, F)`` float64."""
    return torch.cat([g.x for g in graphs]).double()


def _constant_columns(x: Tensor) -> Tensor:
    """``(F,)`` bool: columns of ``x`` ``(N, F)`` holding one value (exactly) for every row."""
    return (x == x[0]).all(0)


def feature_table(graphs: Sequence) -> pd.DataFrame:
    """Per node-feature statistics over all nodes of ``graphs`` (notebook 01's table).

    Columns: feature (index), mean, std, min, max, nonzero_fraction, graph_std (std across
    graphs of the per-graph mean: near 0 means the feature cannot tell graphs apart), constant
    (one value over all nodes, as :func:`feature_stats` counts ``constant_columns``).
    """
    x = _node_features(graphs)  # (total nodes, F)
    per_graph = torch.stack([g.x.double().mean(0) for g in graphs])  # (G, F)
    return pd.DataFrame({
        "feature": np.arange(x.shape[1]),
        "mean": x.mean(0).numpy(),
        "std": x.std(0, unbiased=False).numpy(),
        "min": x.min(0).values.numpy(),
        "max": x.max(0).values.numpy(),
        "nonzero_fraction": (x != 0).double().mean(0).numpy(),
        "graph_std": per_graph.std(0, unbiased=False).numpy(),
        "constant": _constant_columns(x).numpy(),
    })


def _edge_colors(graphs: Sequence) -> Tensor | None:
    """``(E,)`` int64: equal for edges with equal ``edge_attr`` over all graphs (exact); None
    when some graph has no edge features."""
    attrs = [getattr(g, "edge_attr", None) for g in graphs]
    if any(a is None for a in attrs):
        return None
    ea = torch.cat([a.reshape(a.shape[0], -1) for a in attrs]).double()  # (E, D)
    return torch.unique(ea, dim=0, return_inverse=True)[1]


@torch.no_grad()
def wl_signatures(graphs: Sequence, rounds: int = 3, seed: int = 0, *,
                  edge_features: bool = False) -> Tensor:
    """``(G,)`` int64, one per graph: equal for graphs that ``rounds`` of 1-WL colour
    refinement on node features and structure cannot tell apart, the limit of any
    message-passing GNN. Edge features count only with ``edge_features`` (for a model whose
    ``forward`` takes ``edge_attr``; see :func:`gatrank.model.reads_edge_attr`): gatrank's GAT
    and the linear baseline never read them, so graphs differing only there get the same
    score. Messages flow along ``edge_index`` from source to target, as in PyG, and carry the
    edge's features when they count. Every graph needs at least one node; hash collisions are
    ~2^-60.
    """
    gen = torch.Generator().manual_seed(seed)
    sizes = torch.tensor([g.x.shape[0] for g in graphs])
    offsets = torch.cumsum(sizes, 0) - sizes
    ei = torch.cat([g.edge_index + o for g, o in zip(graphs, offsets.tolist(), strict=True)], 1)
    batch = torch.repeat_interleave(torch.arange(len(graphs)), sizes)
    _, color = torch.unique(_node_features(graphs), dim=0, return_inverse=True)  # (N,) exact
    edge_color = _edge_colors(graphs) if edge_features else None
    for _ in range(rounds):
        msg = color[ei[0]]  # (E,) the source's colour, paired with the edge's when it counts
        if edge_color is not None and msg.numel():
            msg = torch.unique(torch.stack([msg, edge_color], 1), dim=0, return_inverse=True)[1]
        size = int(torch.cat([color, msg]).max()) + 1  # without edge colours: color's range
        r = torch.randint(-(2**62), 2**62, (size,), generator=gen)
        neigh = torch.zeros_like(color).index_add_(0, ei[1], r[msg])  # multiset hash
        _, color = torch.unique(torch.stack([color, neigh], 1), dim=0, return_inverse=True)
    r = torch.randint(-(2**62), 2**62, (int(color.max()) + 1,), generator=gen)
    return torch.zeros(len(graphs), dtype=torch.long).index_add_(0, batch, r[color])


@torch.no_grad()
def feature_stats(graphs: Sequence, *, wl_rounds: int = 3,
                  edge_features: bool = False) -> dict[str, Any]:
    """Whether node features and structure can tell graphs apart, before any model sees them.

    Returns:
        ``{"num_features", "constant_columns": columns with one value over all nodes of all
        graphs, "identical_nodes": every node of every graph has the same feature vector (a GAT
        then gives every graph the same embedding: attention averages identical messages),
        "indistinguishable": fraction of graphs that ``wl_rounds`` of 1-WL colour refinement
        (:func:`wl_signatures`) cannot tell from another graph with a different target (no
        message-passing GNN can rank those; edge features count with ``edge_features``),
        "distinct_signatures": number of distinct WL signatures}``. Graphs without nodes are
        skipped.
    """
    usable = [g for g in graphs if getattr(g, "x", None) is not None and g.x.shape[0] > 0]
    if not usable:
        return {"num_features": 0, "constant_columns": 0, "identical_nodes": True,
                "indistinguishable": 1.0, "distinct_signatures": 0}
    constant = _constant_columns(_node_features(usable))  # (F,)
    _, sig = torch.unique(wl_signatures(usable, wl_rounds, edge_features=edge_features),
                          return_inverse=True)
    targets: dict[int, set[float]] = defaultdict(set)
    for s, g in zip(sig.tolist(), usable, strict=True):
        targets[s].add(round(float(g.y.reshape(-1)[0]), 9))
    clashing = sum(1 for s in sig.tolist() if len(targets[s]) > 1)
    return {
        "num_features": int(constant.numel()),
        "constant_columns": int(constant.sum()),
        "identical_nodes": bool(constant.all()),
        "indistinguishable": clashing / len(usable),
        "distinct_signatures": int(sig.max()) + 1,
    }


def loss_ratio(loss: float) -> float:
    """The loss relative to a constant model's ``ln 2``: 1 = no better than constant scores."""
    return loss / LN2
