"""Measurements of a ranking model and its training, cheap enough for the logging cadence.

Three kinds:

- **during training** (one pass over the parameters, or one forward pass without gradients on
  a fixed probe batch): gradient norms per layer, update-to-parameter ratios, pooled-embedding
  spread (runbook Step 2C), how distinct graphs stay after each GAT layer, oversmoothing per layer
  (Dirichlet energy, mean average distance), attention entropy per layer and head against uniform
  attention, dead ReLU units and saturated bounded outputs. :class:`ModelProbe` bundles them for
  ``gatrank.training.train(..., probes=[ModelProbe()])``.
- **static checks** before training: frozen parameters and parameters missing from the
  optimizer, whether the loss has a gradient path to every parameter, whether the loss prefers
  the right order, valid pairs per batch.
- **the loss against ln 2**: a constant model has loss exactly ``ln 2`` under the pairwise loss.

Every function returns plain data (floats, dicts, lists); nothing prints or plots.
Layers are named by :func:`layer_name` (``convs.0``, ``score_head.0``) everywhere.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch_geometric.nn import GATConv, GATv2Conv, global_mean_pool
from torch_geometric.utils import to_dense_batch

from gatrank.losses import LN2, LossFn, valid_pair_mask
from gatrank.metrics import layer_name

__all__ = [
    "param_snapshot",
    "update_ratios",
    "attention_entropy",
    "dirichlet_energy",
    "mean_average_distance",
    "layer_stats",
    "activation_stats",
    "frozen_parameters",
    "gradient_path",
    "check_loss",
    "pair_stats",
    "check_graphs",
    "feature_stats",
    "loss_ratio",
    "ModelProbe",
    "ATTENTION_TYPES",
    "BOUNDED_TYPES",
]

logger = logging.getLogger(__name__)

ATTENTION_TYPES: tuple[type[nn.Module], ...] = (GATConv, GATv2Conv)
"""Modules whose attention weights :func:`attention_entropy` can read."""

BOUNDED_TYPES: dict[type[nn.Module], tuple[float, float]] = {
    nn.Sigmoid: (0.0, 1.0),
    nn.Tanh: (-1.0, 1.0),
    nn.Hardtanh: (-1.0, 1.0),
    nn.Hardsigmoid: (0.0, 1.0),
    nn.Softsign: (-1.0, 1.0),
}
"""Bounded output modules and their ranges, for :func:`activation_stats`."""

_SATURATION_EPS = 1e-3  # an output this close (as a fraction of the range) to a bound is saturated


# --------------------------------------------------------------------------- parameter updates


def param_snapshot(model: nn.Module) -> dict[str, Tensor]:
    """A detached CPU copy of every parameter, for :func:`update_ratios`."""
    return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters()}


@torch.no_grad()
def update_ratios(before: dict[str, Tensor], model: nn.Module) -> dict[str, float]:
    """``||θ_now − θ_before|| / ||θ_before||`` per layer (see :func:`layer_name`).

    A healthy Adam run moves weights by roughly 1e-3 of their norm per step; ~0 means the
    optimizer is not changing the layer (learning rate far too low, frozen, no gradient), ~1
    or more means each update rewrites the layer (learning rate far too high). A layer whose
    weights are all zero before reports ``inf`` if it moved, else 0.
    """
    delta: dict[str, float] = defaultdict(float)
    norm: dict[str, float] = defaultdict(float)
    for name, p in model.named_parameters():
        if name not in before:
            continue
        old = before[name].double()
        key = layer_name(name)
        delta[key] += float((p.detach().cpu().double() - old).pow(2).sum())
        norm[key] += float(old.pow(2).sum())
    out = {}
    for key, d in delta.items():
        if norm[key] > 0:
            out[key] = math.sqrt(d / norm[key])
        else:
            out[key] = math.inf if d > 0 else 0.0
    return out


# --------------------------------------------------------------------------- forward hooks


@contextmanager
def _captured(model: nn.Module, types: tuple[type, ...]) -> Iterator[dict[str, tuple]]:
    """Record ``(args, kwargs, output)`` of every submodule of ``types`` during a forward pass."""
    seen: dict[str, tuple] = {}
    handles = []
    for name, mod in model.named_modules():
        if isinstance(mod, types):
            def hook(m, args, kwargs, out, name=name):
                seen[name] = (args, kwargs, out)

            handles.append(mod.register_forward_hook(hook, with_kwargs=True))
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@torch.no_grad()
def attention_entropy(model: nn.Module, batch) -> dict[str, dict[str, Any]]:
    """Attention entropy per GAT layer and head, against uniform attention.

    For each target node i with in-degree d_i ≥ 2 (self-loops included, as GATConv adds them),
    ``H_i = -Σ_j α_ij log α_ij``; uniform attention over the same neighbourhood has
    ``log d_i``. ``ratio`` is ``Σ_i H_i / Σ_i log d_i`` per head: 1 means attention is uniform
    (GAT behaves like mean aggregation), near 0 means each node attends to one neighbour.

    Returns:
        ``{layer: {"entropy": [H per head, mean over nodes], "uniform": mean log d,
        "ratio": [per head]}}`` for every ``GATConv``/``GATv2Conv`` in ``model``; empty when it
        has none. The model is run in eval mode (no dropout on attention).
    """
    with _eval_mode(model):
        with _captured(model, ATTENTION_TYPES) as seen:
            model(batch)
        modules = dict(model.named_modules())
        weights = {}
        for name, (args, kwargs, _) in seen.items():
            kw = {k: v for k, v in kwargs.items() if k != "return_attention_weights"}
            weights[name] = modules[name](*args, **kw, return_attention_weights=True)[1]
    out: dict[str, dict[str, Any]] = {}
    for name, (ei, alpha) in weights.items():
        alpha = alpha.double()  # (E', heads)
        dst = ei[1]
        n = int(dst.max()) + 1 if dst.numel() else 0
        deg = torch.zeros(n, dtype=torch.float64, device=alpha.device).index_add_(
            0, dst, torch.ones_like(dst, dtype=torch.float64))
        ent = torch.zeros(n, alpha.shape[1], dtype=torch.float64, device=alpha.device)
        ent.index_add_(0, dst, -(alpha * alpha.clamp_min(1e-30).log()))  # (N, heads)
        keep = deg >= 2
        uniform = deg[keep].log()
        if not bool(keep.any()):
            continue
        ratio = ent[keep].sum(0) / uniform.sum()
        out[name] = {
            "entropy": ent[keep].mean(0).tolist(),
            "uniform": float(uniform.mean()),
            "ratio": ratio.tolist(),
        }
    return out


# --------------------------------------------------------------------------- oversmoothing


@torch.no_grad()
def dirichlet_energy(x: Tensor, edge_index: Tensor) -> float:
    """Scale-free Dirichlet energy of node features ``x [N, F]`` on ``edge_index [2, E]``.

    ``mean over edges of ||x_i − x_j||²`` divided by ``2 · mean_i ||x_i − x̄||²``: about 1 when
    neighbours are as different as random nodes, 0 when every node equals its neighbours
    (oversmoothed). 0 when all nodes are equal or there are no edges.
    """
    if edge_index.numel() == 0 or x.shape[0] < 2:
        return 0.0
    x = x.double()
    diff = (x[edge_index[0]] - x[edge_index[1]]).pow(2).sum(-1).mean()
    spread = 2 * (x - x.mean(0)).pow(2).sum(-1).mean()
    if float(spread) <= 1e-24:
        return 0.0
    return float(diff / spread)


@torch.no_grad()
def mean_average_distance(x: Tensor, batch: Tensor | None = None) -> float:
    """Mean average distance (MAD, Chen et al. 2020) of node features ``x [N, F]``.

    The mean cosine distance ``1 − cos(x_i, x_j)`` over pairs of distinct nodes of the same
    graph (``batch [N]`` assigns nodes to graphs; ``None``: one graph). 0 when every node of a
    graph points the same way (oversmoothed). Zero vectors count as distance 0. 0 when no
    graph has two nodes.
    """
    if batch is None:
        batch = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    dense, mask = to_dense_batch(x.double(), batch)  # (G, Nmax, F), (G, Nmax)
    unit = torch.nn.functional.normalize(dense, dim=-1)
    cos = unit @ unit.transpose(1, 2)  # (G, Nmax, Nmax)
    nonzero = (dense.norm(dim=-1) > 0) & mask
    pair = nonzero[:, :, None] & nonzero[:, None, :]
    both = mask[:, :, None] & mask[:, None, :]
    eye = torch.eye(mask.shape[1], dtype=torch.bool, device=x.device)
    both &= ~eye
    n_pairs = int(both.sum())
    if n_pairs == 0:
        return 0.0
    dist = torch.where(pair & both, 1 - cos, torch.zeros_like(cos))
    return float(dist.sum() / n_pairs)


def _graph_spread(node_x: Tensor, batch: Tensor, num_graphs: int) -> tuple[float, float]:
    """(std across graphs of mean-pooled features / RMS of node features, fraction of graph
    pairs whose pooled features differ by more than 1e-6 of that RMS)."""
    pooled = global_mean_pool(node_x.double(), batch, num_graphs)  # (G, F)
    rms = float(node_x.double().pow(2).mean().sqrt())
    if num_graphs < 2 or rms == 0:
        return 0.0, 0.0
    spread = float(pooled.std(0, unbiased=False).mean()) / rms
    dist = torch.cdist(pooled, pooled)  # (G, G)
    upper = torch.triu(torch.ones_like(dist, dtype=torch.bool), diagonal=1)
    distinct = float((dist[upper] > 1e-6 * rms).double().mean())
    return spread, distinct


@torch.no_grad()
def layer_stats(model: nn.Module, batch) -> dict[str, dict[str, float]]:
    """Per layer: how distinct graphs stay and how smooth node embeddings get with depth.

    Layers are the input features (``input``) followed by the model's node embeddings after
    each GAT layer: ``model.node_embeddings(batch)`` when the model has it (gatrank's
    :class:`~gatrank.model.GATRanker`: after residual and activation), else the outputs of
    every ``GATConv``/``GATv2Conv``.

    Returns:
        ``{layer: {"mad", "dirichlet", "graph_spread", "distinct_graphs"}}`` where
        ``graph_spread`` is the std across graphs of mean-pooled embeddings relative to the RMS
        of node embeddings, and ``distinct_graphs`` the fraction of graph pairs whose pooled
        embeddings differ. Run in eval mode.
    """
    with _eval_mode(model):
        if callable(getattr(model, "node_embeddings", None)):
            names = [f"convs.{i}" for i in range(len(getattr(model, "convs", [])))]
            embs = list(model.node_embeddings(batch))
            if len(names) != len(embs):
                names = [f"layer.{i}" for i in range(len(embs))]
        else:
            with _captured(model, ATTENTION_TYPES) as seen:
                model(batch)
            names = list(seen)
            embs = [out[0] if isinstance(out, tuple) else out for _, _, out in seen.values()]
    out: dict[str, dict[str, float]] = {}
    num_graphs = int(batch.num_graphs)
    for name, h in [("input", batch.x), *zip(names, embs, strict=True)]:
        spread, distinct = _graph_spread(h, batch.batch, num_graphs)
        out[name] = {
            "mad": mean_average_distance(h, batch.batch),
            "dirichlet": dirichlet_energy(h, batch.edge_index),
            "graph_spread": spread,
            "distinct_graphs": distinct,
        }
    return out


# --------------------------------------------------------------------------- activations


@torch.no_grad()
def activation_stats(model: nn.Module, batch) -> dict[str, Any]:
    """Dead ReLU units and saturated bounded outputs on one batch.

    A ReLU unit is *dead* when its output is 0 for every row of the batch (every graph, for the
    score head). ReLUs are looked for in ``model.score_head`` when the model has one, else in
    the whole model. A bounded output (``nn.Sigmoid``, ``nn.Tanh``, ...) is *saturated* where
    it lies within 1e-3 of its range from a bound. Only activation *modules* are visible;
    ``torch.relu`` called inside ``forward`` is not.

    Returns:
        ``{"dead_fraction": dead units / units over all ReLU modules (None without any),
        "dead_units": {module: fraction}, "saturated_fraction": saturated outputs / outputs
        (None without bounded modules), "saturation": {module: fraction},
        "preactivation_abs": {module: mean |input| of each bounded module}}``. Eval mode.
    """
    scope = getattr(model, "score_head", None)
    relu_scope = scope if isinstance(scope, nn.Module) else model
    relu_ids = {id(m) for m in relu_scope.modules() if isinstance(m, nn.ReLU)}
    with _eval_mode(model), _captured(model, (nn.ReLU, *BOUNDED_TYPES)) as seen:
        model(batch)
    dead_units: dict[str, float] = {}
    saturation: dict[str, float] = {}
    pre_abs: dict[str, float] = {}
    dead = units = sat = outs = 0
    modules = dict(model.named_modules())
    for name, (args, _, out) in seen.items():
        mod = modules[name]
        if isinstance(mod, nn.ReLU):
            if id(mod) not in relu_ids or out.dim() == 0:
                continue
            flat = out.reshape(out.shape[0], -1) if out.dim() > 1 else out.reshape(-1, 1)
            d = (flat <= 0).all(0)
            dead_units[name] = float(d.double().mean())
            dead += int(d.sum())
            units += d.numel()
        else:
            lo, hi = BOUNDED_TYPES[type(mod)]
            margin = _SATURATION_EPS * (hi - lo)
            s = (out <= lo + margin) | (out >= hi - margin)
            saturation[name] = float(s.double().mean())
            sat += int(s.sum())
            outs += s.numel()
            if args:
                pre_abs[name] = float(args[0].double().abs().mean())
    return {
        "dead_fraction": dead / units if units else None,
        "dead_units": dead_units,
        "saturated_fraction": sat / outs if outs else None,
        "saturation": saturation,
        "preactivation_abs": pre_abs,
    }


# --------------------------------------------------------------------------- static checks


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
    with _eval_mode(model):
        scores = model(batch).reshape(-1)
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


def check_loss(
    loss_fn: LossFn, *, n: int = 16, seed: int = 0, scale: float = 1.0
) -> dict[str, Any]:
    """Test a loss on synthetic scores, the way the runbook's loss tests do.

    Targets are ``n`` distinct values ``0, scale, 2 scale, ...`` in random order (no ties; pass
    a ``scale`` above the loss's ``tie_eps``/``margin_eps``). The loss is evaluated on the
    perfect ordering (scores = standardized targets), its reverse and a constant; its gradient
    at the constant is taken with respect to the scores.

    Returns:
        ``{"loss_perfect", "loss_reversed", "loss_constant" (ln 2 for gatrank's loss),
        "prefers_correct_order" (perfect < reversed), "requires_grad", "has_gradient" (a
        nonzero gradient reaches the scores), "grad_norm", "descent_agrees" (a gradient step
        from the constant moves scores towards the target order: Spearman of −grad with the
        targets > 0), "finite_large_gaps" (finite loss and gradient at score gaps of 1e4, in the
        right and the reversed order)}``.
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
    descent = False
    if has_gradient:
        order = torch.argsort(torch.argsort(-grad.double()))
        rank_y = torch.argsort(torch.argsort(y))
        descent = float(torch.corrcoef(torch.stack([order.double(), rank_y.double()]))[0, 1]) > 0
    finite = True
    for sign in (1.0, -1.0):  # right and reversed order, both with gaps of 1e4
        big = (sign * z * 1e4).float().requires_grad_()
        big_out = loss_fn(big, y.float(), None).loss
        finite = finite and bool(torch.isfinite(big_out.detach()))
        if finite and big_out.requires_grad:
            (g_big,) = torch.autograd.grad(big_out, [big], allow_unused=True)
            finite = g_big is None or bool(torch.isfinite(g_big).all())
    perfect, reverse = value(z.float()), value(-z.float())
    return {
        "loss_perfect": perfect,
        "loss_reversed": reverse,
        "loss_constant": float(out.loss.detach()),
        "prefers_correct_order": perfect < reverse,
        "requires_grad": requires_grad,
        "has_gradient": has_gradient,
        "grad_norm": float(grad.norm()) if grad is not None else 0.0,
        "descent_agrees": descent,
        "finite_large_gaps": finite,
    }


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
    """Valid pairs per batch for one epoch, as the training loader forms batches.

    Args:
        targets: ``[N]`` targets of the training graphs.
        batch_size: graphs per batch.
        group: ``[N]`` group ids (negative: no groups); pairs form only inside a group.
        seed: the loader's seed; with ``shuffle`` the batches are those of the first epoch of
            a ``DataLoader(shuffle=True)`` with a generator seeded with it, as
            ``gatrank.training`` builds its loader.

    Returns:
        ``{"batches", "batches_without_pairs", "fraction_without_pairs", "pairs_mean",
        "pairs_min", "pairs_all" (valid pairs over the whole set as one batch)}``.
    """
    y = targets.reshape(-1).double()
    n = y.numel()
    g = None if group is None or bool((group < 0).all()) else group.reshape(-1)
    loader = torch.utils.data.DataLoader(range(n), batch_size=max(1, batch_size),
                                         shuffle=shuffle,
                                         generator=torch.Generator().manual_seed(seed))
    counts = []
    for idx in loader:  # (b,) positions, in the training loader's order
        m = valid_pair_mask(y[idx], margin_eps=margin_eps, tie_eps=tie_eps,
                            group=None if g is None else g[idx])
        counts.append(int(m.sum()))
    every = int(valid_pair_mask(y, margin_eps=margin_eps, tie_eps=tie_eps, group=g).sum())
    without = sum(c == 0 for c in counts)
    return {
        "batches": len(counts),
        "batches_without_pairs": without,
        "fraction_without_pairs": without / len(counts) if counts else 1.0,
        "pairs_mean": sum(counts) / len(counts) if counts else 0.0,
        "pairs_min": min(counts) if counts else 0,
        "pairs_all": every,
    }


def check_graphs(graphs: Sequence) -> list:
    """Validate in-memory graphs the way :func:`gatrank.data.load_graphs` validates files.

    For graphs that did not come through a manifest (or were edited after loading). Reports
    NaN/Inf in ``x``, ``edge_attr`` or ``y``, graphs without nodes and graphs without edges.

    Returns:
        A list of :class:`gatrank.data.DataProblem` (``line`` and ``file`` are None; ``id`` is
        the graph's ``gid`` or its position), with the same ``code`` values as the manifest
        checks (``nonfinite_features``, ``nonfinite_edge_features``, ``nan_target``,
        ``inf_target``, ``empty_graph``, ``no_edges``). Empty when every graph is usable.
    """
    from gatrank.data import DataProblem

    problems = []
    for i, g in enumerate(graphs):
        gid = str(getattr(g, "gid", "") or i)

        def add(code: str, problem: str, fix: str, gid: str = gid) -> None:
            problems.append(DataProblem(None, gid, None, problem, fix, code))

        x = getattr(g, "x", None)
        n = 0 if x is None else int(x.shape[0])
        if n == 0:
            add("empty_graph", f"graph {gid} has no nodes", "remove the graph or fix it")
            continue
        bad = ~torch.isfinite(x)
        if bool(bad.any()):
            add("nonfinite_features",
                f"graph {gid}: node features contain {int(torch.isnan(x).sum())} NaN and "
                f"{int(torch.isinf(x).sum())} Inf values",
                "impute or drop the missing values before building the graph")
        ea = getattr(g, "edge_attr", None)
        if ea is not None and not bool(torch.isfinite(ea).all()):
            add("nonfinite_edge_features", f"graph {gid}: edge features contain NaN/Inf",
                "impute or drop the missing edge values")
        ei = getattr(g, "edge_index", None)
        if ei is None or ei.numel() == 0:
            add("no_edges", f"graph {gid} has {n} nodes and no edges",
                "message passing needs edges: drop the graph or add edges deliberately")
        y = getattr(g, "y", None)
        if y is not None and not bool(torch.isfinite(y).all()):
            code = "nan_target" if bool(torch.isnan(y).any()) else "inf_target"
            add(code, f"graph {gid}: target is {y.reshape(-1).tolist()}",
                "give every graph a finite target or drop it")
    return problems


def _wl_signatures(graphs: Sequence, rounds: int, seed: int = 0) -> Tensor:
    """One int64 per graph: equal for graphs that ``rounds`` of 1-WL colour refinement (the
    limit of any message-passing GNN) cannot tell apart; hash collisions are ~2^-60."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.cat([g.x for g in graphs])  # (N, F)
    sizes = torch.tensor([g.x.shape[0] for g in graphs])
    offsets = torch.cumsum(sizes, 0) - sizes
    ei = torch.cat([g.edge_index + o for g, o in zip(graphs, offsets.tolist(), strict=True)], 1)
    batch = torch.repeat_interleave(torch.arange(len(graphs)), sizes)
    proj = torch.rand(x.shape[1], dtype=torch.float64, generator=gen) + 0.5
    _, color = torch.unique(x.double() @ proj, return_inverse=True)  # (N,) initial colours
    for _ in range(rounds):
        r = torch.randint(-(2**62), 2**62, (int(color.max()) + 1,), generator=gen)
        neigh = torch.zeros_like(color).index_add_(0, ei[1], r[color[ei[0]]])  # multiset hash
        _, color = torch.unique(torch.stack([color, neigh], 1), dim=0, return_inverse=True)
    r = torch.randint(-(2**62), 2**62, (int(color.max()) + 1,), generator=gen)
    return torch.zeros(len(graphs), dtype=torch.long).index_add_(0, batch, r[color])


@torch.no_grad()
def feature_stats(graphs: Sequence, *, wl_rounds: int = 3) -> dict[str, Any]:
    """Whether node features and structure can tell graphs apart, before any model sees them.

    Returns:
        ``{"num_features", "constant_columns": columns with one value over all nodes of all
        graphs, "identical_nodes": every node of every graph has the same feature vector (a GAT
        then gives every graph the same embedding: attention averages identical messages),
        "indistinguishable": fraction of graphs that ``wl_rounds`` of 1-WL colour refinement
        cannot tell from another graph with a different target (no message-passing GNN can
        rank those), "distinct_signatures": number of distinct WL signatures}``. Graphs without
        nodes are skipped.
    """
    usable = [g for g in graphs if getattr(g, "x", None) is not None and g.x.shape[0] > 0]
    if not usable:
        return {"num_features": 0, "constant_columns": 0, "identical_nodes": True,
                "indistinguishable": 1.0, "distinct_signatures": 0}
    allx = torch.cat([g.x for g in usable])  # (N, F)
    constant = (allx == allx[0]).all(0)  # (F,)
    _, sig = torch.unique(_wl_signatures(usable, wl_rounds), return_inverse=True)
    targets: dict[int, set[float]] = defaultdict(set)
    for s, g in zip(sig.tolist(), usable, strict=True):
        targets[s].add(round(float(g.y.reshape(-1)[0]), 9))
    clashing = sum(1 for s in sig.tolist() if len(targets[s]) > 1)
    return {
        "num_features": int(allx.shape[1]),
        "constant_columns": int(constant.sum()),
        "identical_nodes": bool(constant.all()),
        "indistinguishable": clashing / len(usable),
        "distinct_signatures": int(sig.max()) + 1,
    }


def loss_ratio(loss: float) -> float:
    """The loss relative to a constant model's ``ln 2``: 1 = no better than constant scores."""
    return loss / LN2


# --------------------------------------------------------------------------- probe


class ModelProbe:
    """Measurements for ``train(..., probes=[ModelProbe()])`` at each logged epoch.

    Uses the first ``max_graphs`` training graphs as a fixed probe batch. Adds to each record:
    ``attention_entropy`` (layer → mean over heads of the entropy ratio, see
    :func:`attention_entropy`), ``layers`` (see :func:`layer_stats`), ``dead_fraction``,
    ``saturated_fraction`` (see :func:`activation_stats`), ``update_ratio`` (mean over layers
    of :func:`update_ratios` since the previous record; None at the first),
    ``update_ratio_per_layer`` and ``param_norm``. Costs a few forward passes without gradients
    per record; the model's train/eval mode is restored and no random numbers are drawn.
    """

    def __init__(self, max_graphs: int = 64) -> None:
        self.max_graphs = max_graphs
        self._batch = None
        self._key: tuple[int, int] | None = None
        self._snapshot: dict[str, Tensor] | None = None
        self.calls = 0

    def _probe_batch(self, graphs: Sequence, device: torch.device):
        from torch_geometric.data import Batch

        key = (id(graphs), len(graphs))
        if self._batch is None or key != self._key:
            self._batch = Batch.from_data_list(list(graphs[: self.max_graphs]))
            self._key = key
        return self._batch.to(device)

    @torch.no_grad()
    def __call__(self, model: nn.Module, graphs: Sequence, device: torch.device) -> dict[str, Any]:
        batch = self._probe_batch(graphs, device)
        self.calls += 1
        record: dict[str, Any] = {}
        att = attention_entropy(model, batch)
        record["attention_entropy"] = {k: sum(v["ratio"]) / len(v["ratio"]) for k, v in att.items()}
        record["layers"] = layer_stats(model, batch)
        act = activation_stats(model, batch)
        record["dead_fraction"] = act["dead_fraction"]
        record["saturated_fraction"] = act["saturated_fraction"]
        ratios = update_ratios(self._snapshot, model) if self._snapshot is not None else {}
        record["update_ratio_per_layer"] = ratios
        finite = [v for v in ratios.values() if math.isfinite(v)]
        record["update_ratio"] = sum(finite) / len(finite) if finite else None
        record["param_norm"] = math.sqrt(sum(float(p.detach().double().pow(2).sum())
                                             for p in model.parameters()))
        self._snapshot = param_snapshot(model)
        return record
