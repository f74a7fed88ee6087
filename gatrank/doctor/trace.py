"""The signal trace: module by module, where the scores stop varying across graphs.

:func:`signal_trace` runs one forward pass over a fixed batch with a forward hook on every
submodule and measures each module call's output, in the order calls complete (a leaf before its
container): how much it varies *across graphs* (graph level: std across graphs; node level: the
same on the per-graph means of the nodes, beside the std across all nodes), its exact zeros, and
whether every graph gets the same output. The first module whose output is the same for every
graph while its input still varies is the culprit, with the doctor cause it points to; when
every module's output varies but the scores do not, the culprit is the model's own ``forward``
code after its last module (a functional softmax, relu, clamp or ``expand``). Only modules are
visible: a ``torch.relu`` inside ``forward`` shows as the step between two modules' measures.
"""

from __future__ import annotations

import copy
import math
import re
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch_geometric.utils import scatter

from gatrank.checks.probes import _SATURATION_EPS, BOUNDED_TYPES, eval_mode, weight_kind

__all__ = ["ModuleTrace", "Culprit", "SignalTrace", "signal_trace", "short_type",
           "CONSTANT_RTOL"]

CONSTANT_RTOL = 1e-6
"""Outputs are *constant* across graphs when, for every feature, max - min over the graphs is at
most this times ``max(1, max |value|)``: float32 round-off, not a signal."""

# activations that die: a unit below the kink for every graph gives every graph the same value
_RECTIFIERS: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.CELU, nn.SELU, nn.GELU,
    nn.SiLU, nn.Mish, nn.Hardswish)

_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm,
          nn.modules.instancenorm._InstanceNorm, nn.RMSNorm)
_SOFTMAXES = (nn.Softmax, nn.LogSoftmax, nn.Softmin)
# short_type: settings it leaves out, and sizes it writes bare (Linear(9, 64))
_DROPPED_KEYS = {"eps", "momentum", "affine", "track_running_stats", "elementwise_affine",
                 "inplace", "bias"}
_SIZE_KEYS = {"in_features", "out_features", "in_channels", "out_channels", "num_features",
              "normalized_shape", "in1_features", "in2_features", "num_embeddings",
              "embedding_dim", "input_size", "hidden_size"}
_TYPE_MAX = 40


# --------------------------------------------------------------------------- results


def _r(v: float | None) -> float | None:
    """A float for JSON: 4 significant digits, None for NaN/Inf/None."""
    if v is None or not math.isfinite(v):
        return None
    return float(f"{v:.4g}")


@dataclass
class ModuleTrace:
    """One module call's output, measured across the graphs of the batch."""

    path: str
    """Dotted name from ``named_modules()``; the k-th call of a module called again gets
    ``path#k``."""
    type: str
    """Short description of the module (:func:`short_type`): ``LayerNorm(1)``, ``ReLU``."""
    level: str
    """``graph`` (dim 0 is the number of graphs), ``node`` (the number of nodes) or ``other``
    (edge level, a scalar, one row for the whole batch)."""
    shape: list[int]
    graph_std: float
    """Std across graphs (population, ddof 0) per feature, then root-mean-square over
    features; node level: the same on the per-graph means of the nodes. NaN at ``other``."""
    node_std: float | None
    """Node level only: std across all nodes, RMS over features."""
    zero_fraction: float
    """Fraction of output entries that are exactly 0."""
    constant: bool
    """Every graph gets the same output (node level: its nodes' mean, min and max are the same
    for every graph); see :data:`CONSTANT_RTOL`. False at level ``other`` (not measurable)."""
    input_graph_std: float | None
    """``graph_std`` of the module's first floating tensor input with one row per graph or
    node; None when it has none (e.g. an aggregation over edges)."""
    input_constant: bool | None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("graph_std", "node_std", "zero_fraction", "input_graph_std"):
            d[k] = _r(d[k])
        return d


@dataclass
class Culprit:
    """Where graph-to-graph variation dies, and the doctor cause it points to."""

    path: str
    """The module (for ``where == "forward"``: the last module whose output still varies)."""
    type: str
    where: str
    """``module``: that module maps a varying input to a constant output; ``forward``: the
    model's own code after ``path`` makes the scores constant."""
    cause: str
    """``dead_activations``, ``score_head_saturated``, ``bad_initialization`` or
    ``constant_output_layer``."""
    input_std: float
    output_std: float
    evidence: str

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_std"], d["output_std"] = _r(self.input_std), _r(self.output_std)
        return d


@dataclass
class SignalTrace:
    """A hooked forward pass: every module call in completion order (the root model excluded),
    the scores' spread across graphs, and the culprit (None when the scores vary)."""

    modules: list[ModuleTrace]
    num_graphs: int
    num_nodes: int
    score_shape: list[int]
    """The raw model output's shape."""
    scores_std: float | None
    """Std across graphs of the scores when the output is ``[G]`` or ``[G, 1]``; else None."""
    scores_constant: bool | None
    culprit: Culprit | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, floats to 4 significant digits."""
        return {"num_graphs": self.num_graphs, "num_nodes": self.num_nodes,
                "score_shape": list(self.score_shape), "scores_std": _r(self.scores_std),
                "scores_constant": self.scores_constant,
                "culprit": self.culprit.to_dict() if self.culprit else None,
                "modules": [m.to_dict() for m in self.modules]}

    def format_lines(self, limit: int = 12) -> list[str]:
        """A short table for a terminal: one line per module (path, type, level, std across
        graphs, % zeros), the culprit marked ``<-``; beyond ``limit`` modules only a window
        around the culprit (or the first and last modules) is shown, the rest counted."""
        mods, c = self.modules, self.culprit
        mark = next((i for i, m in enumerate(mods)
                     if c is not None and c.where == "module" and m.path == c.path), None)
        wp = min(max([len(m.path) for m in mods] + [6]), 32)
        wt = max([len(m.type) for m in mods] + [len(str(self.score_shape))])

        def row(path: str, kind: str, level: str, std: float | None, same: bool | None,
                zeros: str, note: str = "") -> str:
            text = "-" if std is None or not math.isfinite(std) else f"{std:.3g}"
            text += " (same for all)" if same else ""
            return f"{path:<{wp}}  {kind:<{wt}}  {level:<5}  {text:<17}  {zeros}{note}".rstrip()

        lines = [f"{'module':<{wp}}  {'type':<{wt}}  level  std across graphs  zeros"]
        shown = -1
        for i in [*_window(len(mods), limit, mark), len(mods)]:
            if i > shown + 1:
                lines.append(f"... {i - shown - 1} module(s)")
            if i < len(mods):
                m = mods[i]
                lines.append(row(m.path, m.type, m.level, m.graph_std, m.constant,
                                 f"{100 * m.zero_fraction:.0f}%",
                                 f"  <- culprit ({c.cause})" if i == mark else ""))
            shown = i
        note = f"  <- culprit: forward code after {c.path}" if c and c.where == "forward" else ""
        lines.append(row("scores", str(self.score_shape), "", self.scores_std,
                         self.scores_constant, "", note))
        return lines


def _window(n: int, limit: int, centre: int | None) -> list[int]:
    """Indices of the rows :meth:`SignalTrace.format_lines` shows."""
    limit = max(limit, 2)
    if n <= limit:
        return list(range(n))
    if centre is None:
        head = limit // 2
        return list(range(head)) + list(range(n - (limit - head), n))
    start = min(max(centre - limit // 2, 0), n - limit)
    return list(range(start, start + limit))


# --------------------------------------------------------------------------- short types


_TOP_COMMA = re.compile(r",(?![^(]*\))")  # a comma outside parentheses


def _items(s: str) -> list[str]:
    return [p.strip() for p in _TOP_COMMA.split(s) if p.strip()]


def short_type(module: nn.Module) -> str:
    """A module in a few characters: its one-line repr without settings (``Linear(9, 64)``,
    ``LayerNorm(1)``, ``GATConv(9, 64, heads=4)``, ``Softmax(dim=-1)``), the bare class name
    for modules without arguments (``ReLU``) or with a multi-line repr (``Sequential``)."""
    name = type(module).__name__
    text = repr(module)
    if "\n" in text or not (text.startswith(name + "(") and text.endswith(")")):
        return name
    items = []
    for item in _items(text[len(name) + 1:-1]):
        key, eq, value = (s.strip() for s in item.partition("="))
        if eq and key in _DROPPED_KEYS:
            continue
        if eq and key in _SIZE_KEYS:
            item = value
        if item.startswith("(") and item.endswith(")"):  # a shape tuple: (1,) -> 1
            item = ", ".join(_items(item[1:-1]))
        items.append(item)
    while items and len(f"{name}({', '.join(items)})") > _TYPE_MAX:
        items.pop()
    return f"{name}({', '.join(items)})" if items else name


# --------------------------------------------------------------------------- measures


def _first_float(value: Any) -> Tensor | None:
    """The tensor a module call produced: itself, or the first floating tensor of a tuple."""
    if isinstance(value, Tensor):
        return value if value.is_floating_point() else None
    if isinstance(value, (tuple, list)):
        for v in value:
            if (t := _first_float(v)) is not None:
                return t
    return None


class _Measure(NamedTuple):
    level: str
    per_graph: Tensor | None  # (G, F) float64: the graph rows, or the per-graph node means
    graph_std: float = math.nan
    node_std: float | None = None
    constant: bool = False


def _spread(per_graph: Tensor) -> float:
    """Std across graphs (rows) per feature, root-mean-square over features."""
    return float(per_graph.var(0, unbiased=False).mean().sqrt())


def _is_constant(per_graph: Tensor) -> bool:
    if per_graph.numel() == 0:
        return True
    span = float((per_graph.amax(0) - per_graph.amin(0)).max())
    return span <= CONSTANT_RTOL * max(1.0, float(per_graph.abs().max()))


@dataclass
class _Batch:
    """What the measures need of the batch: its sizes and the node-to-graph vector."""

    num_graphs: int
    num_nodes: int
    index: Tensor

    def measure(self, t: Tensor) -> _Measure:
        """How ``t`` varies across graphs (see :class:`ModuleTrace`)."""
        if t.dim() == 0 or t.numel() == 0 or t.shape[0] not in (self.num_graphs,
                                                                 self.num_nodes):
            return _Measure("other", None)
        flat = t.detach().reshape(t.shape[0], -1).double()  # (G or N, F)
        if t.shape[0] == self.num_graphs:
            return _Measure("graph", flat, _spread(flat), None, _is_constant(flat))

        def per_graph(reduce: str) -> Tensor:
            return scatter(flat, self.index, dim=0, dim_size=self.num_graphs, reduce=reduce)

        means = per_graph("mean")  # (G, F)
        # the same means alone are not the same output: a per-graph normalization (GraphNorm,
        # InstanceNorm) centres every graph at 0 and keeps the graphs apart
        same = all(_is_constant(v) for v in (means, per_graph("max"), per_graph("min")))
        return _Measure("node", means, _spread(means), _spread(flat), same)


class _Input(NamedTuple):
    """A call's first float argument with a row per graph or node, before an in-place call."""

    measure: _Measure
    shape: tuple[int, ...]
    mean: float
    abs_mean: float


def _input_of(args: tuple, kwargs: dict, b: _Batch) -> _Input | None:
    for v in (*args, *kwargs.values()):
        if (isinstance(v, Tensor) and v.is_floating_point() and v.numel() > 0
                and v.shape[0] in (b.num_graphs, b.num_nodes)):
            d = v.detach().double()
            return _Input(b.measure(v), tuple(v.shape), float(d.mean()), float(d.abs().mean()))
    return None


# --------------------------------------------------------------------------- the culprit's cause


def _bounds(module: nn.Module) -> tuple[float, float] | None:
    if isinstance(module, nn.Hardtanh):  # ReLU6 too: (0, 6)
        return float(module.min_val), float(module.max_val)
    return BOUNDED_TYPES.get(type(module))


def _constant_weights(module: nn.Module, path: str) -> list[str]:
    """The module's own constant weights (:func:`weight_kind`), in words."""
    found = []
    for name, p in module.named_parameters(recurse=False):
        kind = weight_kind(p)
        if kind == "identical rows":
            found.append(f"{path}.{name} has {p.shape[0]} identical rows (identical units)")
        elif kind:
            found.append(f"{path}.{name} is constant (every entry "
                         f"{float(p.detach().reshape(-1)[0]):.3g})")
    return found


def _cause(module: nn.Module, path: str, inp: _Input, out: Tensor) -> tuple[str, str]:
    """The doctor cause a constant-output module points to, and the sentence saying why."""
    o = out.detach().double()
    lo, hi = _bounds(module) or (-math.inf, math.inf)
    margin = _SATURATION_EPS * (hi - lo)
    at_top, at_bottom = bool((o >= hi - margin).all()), bool((o <= lo + margin).all())
    if isinstance(module, _RECTIFIERS) and not at_top:
        return "dead_activations", (
            f"a dead activation: {100 * float((o == 0).double().mean()):.0f}% of its outputs "
            f"are 0 (mean input {inp.mean:.3g}, below the kink for every graph)")
    if math.isfinite(margin) and bool(((o <= lo + margin) | (o >= hi - margin)).all()):
        return "score_head_saturated", (
            f"saturated: every output within {margin:.2g} of its bounds [{lo:g}, {hi:g}] "
            f"(mean |input| {inp.abs_mean:.3g}{', all at the top' if at_top else ''}"
            f"{', all at the bottom' if at_bottom else ''})")
    if weights := _constant_weights(module, path):
        return "bad_initialization", "; ".join(weights)
    if isinstance(module, _NORMS) and len(inp.shape) > 1 and inp.shape[-1] == 1:
        return "constant_output_layer", ("a normalization over a dimension of size 1: every "
                                         "input becomes 0 (then the layer's bias)")
    if isinstance(module, _SOFTMAXES) and inp.shape[module.dim if module.dim is not None
                                                    else -1] == 1:
        return "constant_output_layer", "a softmax over one unit: the same value for every input"
    return "constant_output_layer", "it maps inputs that vary across graphs to one output"


def _every_graph(per_graph: Tensor) -> str:
    """What every graph gets, when they all get the same: ``every graph 0``."""
    row = per_graph[0]
    if row.numel() == 1:
        return f"every graph {float(row[0]):.4g}"
    if bool((row == 0).all()):
        return f"every graph 0 in all {row.numel()} features"
    return f"every graph the same {row.numel()} values"


# --------------------------------------------------------------------------- the hooked pass


@dataclass
class _Recorder:
    """Hook state: each call's input (pre-hook) and measures (hook), and the first culprit."""

    batch: _Batch
    modules: list[ModuleTrace] = field(default_factory=list)
    returns_child: list[bool] = field(default_factory=list)
    """The call is a container's that returned the previous call's tensor (a Sequential's last
    child's output): the forward culprit names the child."""
    culprit: Culprit | None = None
    calls: Counter = field(default_factory=Counter)
    inputs: defaultdict = field(default_factory=lambda: defaultdict(list))
    last_out: Tensor | None = None

    def before(self, path: str):
        def take(module: nn.Module, args: tuple, kwargs: dict) -> None:
            self.inputs[path].append(_input_of(args, kwargs, self.batch))

        return take

    def hook(self, path: str):
        def record(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            self.calls[path] += 1
            inp = self.inputs[path].pop() if self.inputs[path] else None
            out = _first_float(output)
            if out is None:
                return
            k = self.calls[path]
            name = path if k == 1 else f"{path}#{k}"
            m, mi = self.batch.measure(out), inp.measure if inp else None
            known = mi is not None and mi.level != "other"
            self.modules.append(ModuleTrace(
                path=name, type=short_type(module), level=m.level, shape=list(out.shape),
                graph_std=m.graph_std, node_std=m.node_std,
                zero_fraction=float((out == 0).double().mean()) if out.numel() else 0.0,
                constant=m.constant, input_graph_std=mi.graph_std if known else None,
                input_constant=mi.constant if known else None))
            self.returns_child.append(out is self.last_out
                                      and next(module.children(), None) is not None)
            self.last_out = out
            if self.culprit is None and m.constant and known and not mi.constant:
                self.culprit = self._module_culprit(module, name, inp, out, m)  # first one

        return record

    def _module_culprit(self, module: nn.Module, name: str, inp: _Input, out: Tensor,
                        m: _Measure) -> Culprit:
        cause, why = _cause(module, name.split("#")[0], inp, out)
        kind, std_in = short_type(module), inp.measure.graph_std
        evidence = (f"{name} ({kind}): input std {std_in:.3g} across graphs, output std "
                    f"{m.graph_std:.3g} ({_every_graph(m.per_graph)}); {why}")
        return Culprit(path=name, type=kind, where="module", cause=cause, input_std=std_in,
                       output_std=m.graph_std, evidence=evidence)

    def forward_culprit(self, scores_std: float, scores: Tensor) -> Culprit | None:
        """The model's code after its last varying module made the scores constant; None when
        no module's output varies (the batch itself does not)."""
        varying = [i for i, m in enumerate(self.modules)
                   if m.level in ("graph", "node") and not m.constant]
        if not varying:
            return None
        i = varying[-1]
        while i > 0 and self.returns_child[i]:
            i -= 1
        last = self.modules[i]
        every = ("every module's output varies across graphs but the scores do not: "
                 if not any(m.constant for m in self.modules) else "")
        evidence = (f"{every}the last module whose output varies, {last.path} ({last.type}), "
                    f"has output std {last.graph_std:.3g} across graphs; the scores have std "
                    f"{scores_std:.3g} ({_every_graph(scores)}): the model's forward code after "
                    f"{last.path} (a functional softmax, relu, clamp or expand in forward) makes "
                    "the scores constant")
        return Culprit(path=last.path, type=last.type, where="forward",
                       cause="constant_output_layer", input_std=last.graph_std,
                       output_std=scores_std, evidence=evidence)


@torch.no_grad()
def signal_trace(model: nn.Module, batch, *, device: torch.device | str | None = None
                 ) -> SignalTrace:
    """Forward hooks on every submodule over one fixed batch (eval mode, no gradients, the
    model's train/eval state restored after): per module call, in forward order, how much its
    output varies across graphs, and the culprit where the variation dies.

    Args:
        model: called as ``model(batch)`` (a user's PyG-style model after
            :func:`gatrank.model.adapt_forward`).
        batch: a PyG ``Batch`` of at least 2 graphs.
        device: where to run; default the device of the model's parameters. The batch is moved
            there, the model is not.

    Raises:
        ValueError: fewer than 2 graphs (nothing can vary across graphs). Whatever the model's
            ``forward`` raises is raised as it is, with every hook removed.
    """
    g = int(getattr(batch, "num_graphs", 1))
    if g < 2:
        raise ValueError(f"signal_trace needs a batch of at least 2 graphs, got {g}: build one "
                         "with torch_geometric.data.Batch.from_data_list(graphs)")
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    batch = copy.copy(batch).to(device)  # Batch.to moves in place: leave the caller's alone
    n = int(batch.num_nodes)
    rec = _Recorder(_Batch(g, n, batch.batch))
    handles = []
    try:
        for path, mod in model.named_modules():
            if mod is not model:
                handles += [mod.register_forward_pre_hook(rec.before(path), with_kwargs=True),
                            mod.register_forward_hook(rec.hook(path), with_kwargs=True)]
        with eval_mode(model):
            output = model(batch)
    finally:
        for h in handles:
            h.remove()
    raw = _first_float(output)
    shape = list(raw.shape) if raw is not None else []
    scores_std = scores_constant = None
    culprit = rec.culprit
    if raw is not None and shape in ([g], [g, 1]):
        per_graph = raw.detach().reshape(g, 1).double()
        scores_std, scores_constant = _spread(per_graph), _is_constant(per_graph)
        if culprit is None and scores_constant:
            culprit = rec.forward_culprit(scores_std, per_graph)
    if scores_constant is False:
        culprit = None
    return SignalTrace(modules=rec.modules, num_graphs=g, num_nodes=n, score_shape=shape,
                       scores_std=scores_std, scores_constant=scores_constant, culprit=culprit)
