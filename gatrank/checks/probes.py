"""In-training measurements of a ranking model, cheap enough for the logging cadence.

One pass over the parameters, or one forward pass without gradients on a fixed probe batch:
update-to-parameter ratios, how distinct graphs stay after each GAT layer, oversmoothing per
layer (Dirichlet energy, mean average distance), attention entropy per layer and head against
uniform attention, dead ReLU units and saturated bounded outputs. :class:`ModelProbe` bundles
them for ``gatrank.training.train(..., probes=[ModelProbe()])``. (Gradient norms and the
pooled-embedding spread, which every logged epoch records, are in :mod:`gatrank.metrics`; the
checks that need no training history are in :mod:`gatrank.checks.static`.)

Every function returns plain data (floats, dicts, lists); nothing prints or plots.
Layers are named by :func:`layer_name` (``convs.0``, ``score_head.0``) everywhere.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch
from torch_geometric.nn import GATConv, GATv2Conv, global_mean_pool
from torch_geometric.utils import to_dense_batch

from gatrank.metrics import layer_name

__all__ = [
    "eval_mode",
    "weight_kind",
    "param_snapshot",
    "update_ratios",
    "UpdateTracker",
    "attention_entropy",
    "dirichlet_energy",
    "mean_average_distance",
    "layer_stats",
    "activation_stats",
    "ModelProbe",
    "ATTENTION_TYPES",
    "BOUNDED_TYPES",
]

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


def weight_kind(p: Tensor) -> str:
    """How a weight (a parameter of 2 or more dimensions) starts with identical units:
    ``"all 0"``/``"all 0.5"`` (every entry the same value), ``"identical rows"`` (every row,
    i.e. unit, the same), or ``""`` (neither; also for 1-D parameters and single entries:
    biases and normalization scales start constant by design)."""
    if p.dim() < 2 or p.numel() < 2:
        return ""
    w = p.detach().reshape(p.shape[0], -1)  # (units, fan-in)
    first = float(w.reshape(-1)[0])
    if bool((w == first).all()):
        return f"all {first:g}"
    if w.shape[0] >= 2 and bool((w == w[0]).all()):
        return "identical rows"
    return ""


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


class UpdateTracker:
    """How far the weights moved since the previous call: ``update_ratio_per_layer``
    (:func:`update_ratios`; empty at the first call), ``update_ratio`` (their mean over the
    layers with a finite ratio; None at the first call) and ``param_norm`` (the L2 norm of all
    parameters). One pass over the parameters and a CPU copy of them per call; no forward pass,
    no random numbers, gradients untouched. :class:`ModelProbe` records these keys, and so does
    :class:`gatrank.Monitor` at each logged epoch."""

    def __init__(self) -> None:
        self._snapshot: dict[str, Tensor] | None = None

    @torch.no_grad()
    def __call__(self, model: nn.Module) -> dict[str, Any]:
        ratios = update_ratios(self._snapshot, model) if self._snapshot is not None else {}
        finite = [v for v in ratios.values() if math.isfinite(v)]
        out = {
            "update_ratio_per_layer": ratios,
            "update_ratio": sum(finite) / len(finite) if finite else None,
            "param_norm": math.sqrt(sum(float(p.detach().double().pow(2).sum())
                                        for p in model.parameters())),
        }
        self._snapshot = param_snapshot(model)
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
def eval_mode(model: nn.Module) -> Iterator[None]:
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
    with eval_mode(model):
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
    every ``GATConv``/``GATv2Conv`` that outputs one row per node.

    Returns:
        ``{layer: {"mad", "dirichlet", "graph_spread", "distinct_graphs"}}`` where
        ``graph_spread`` is the std across graphs of mean-pooled embeddings relative to the RMS
        of node embeddings, and ``distinct_graphs`` the fraction of graph pairs whose pooled
        embeddings differ. Run in eval mode.
    """
    with eval_mode(model):
        if callable(getattr(model, "node_embeddings", None)):
            names = [f"convs.{i}" for i in range(len(getattr(model, "convs", [])))]
            embs = list(model.node_embeddings(batch))
            if len(names) != len(embs):
                names = [f"layer.{i}" for i in range(len(embs))]
        else:
            with _captured(model, ATTENTION_TYPES) as seen:
                model(batch)
            outs = {k: out[0] if isinstance(out, tuple) else out for k, (_, _, out) in seen.items()}
            # node embeddings only: a layer attending from nodes to graphs (AttentiveFP's
            # mol_conv) outputs one row per graph
            outs = {k: h for k, h in outs.items() if h.shape[0] == batch.num_nodes}
            names, embs = list(outs), list(outs.values())
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
    with eval_mode(model), _captured(model, (nn.ReLU, *BOUNDED_TYPES)) as seen:
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
        self._updates = UpdateTracker()
        self.calls = 0

    def _probe_batch(self, graphs: Sequence, device: torch.device):
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
        record.update(self._updates(model))
        return record
