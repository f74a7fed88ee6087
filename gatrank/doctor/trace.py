"""The signal trace: module by module, where the scores stop varying across graphs.

:func:`signal_trace` runs one forward pass over a fixed batch with a forward hook on every
submodule and measures each module call's output, in the order calls complete (a leaf before its
container): how much it varies *across graphs* (graph level: std across graphs; node level: the
same on the per-graph means of the nodes, beside the std across all nodes), its exact zeros, and
whether every graph gets the same output. The first module whose output is the same for every
graph while its input still varies is the culprit, with the doctor cause it points to; when
every module's output varies but the scores do not, the culprit is the model's own ``forward``
code after its last module. A :class:`torch.overrides.TorchFunctionMode`, active during that
pass only, records each torch function the model's own code calls outside every submodule (a
``torch.relu``, ``F.softmax``, ``Tensor.expand`` in ``forward``, with its file and line), so that
culprit names the call: the first one after the last varying module whose output is the same
for every graph while its input varies. Calls PyG's functions make (the scatter inside
``global_mean_pool``) are the library's, not the model's code, and are not recorded.
"""

from __future__ import annotations

import copy
import io
import linecache
import math
import os
import re
import sys
import tokenize
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import torch
import torch_geometric
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch_geometric.utils import scatter

from gatrank.checks.probes import _SATURATION_EPS, BOUNDED_TYPES, eval_mode, weight_kind

__all__ = ["ModuleTrace", "CallTrace", "Culprit", "SignalTrace", "signal_trace", "short_type",
           "op_name", "call_site", "site_text", "during_forward", "CONSTANT_RTOL"]

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

# torch functions by what they do to a signal, by base name (``torch.relu``, ``Tensor.relu_``
# and ``F.relu`` are all ``relu``): the cause a call that makes every graph the same points to
_RECTIFIER_FNS = {"relu", "relu6", "leaky_relu", "rrelu", "prelu", "elu", "celu", "selu", "gelu",
                  "silu", "mish", "hardswish", "softplus", "threshold"}
_CLAMP_FNS = {"clamp", "clip", "clamp_min", "clamp_max", "hardtanh"}
_BOUNDED_FNS = {"sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0), "hardsigmoid": (0.0, 1.0),
                "softsign": (-1.0, 1.0), "expit": (0.0, 1.0)}
_SOFTMAX_FNS = {"softmax", "log_softmax", "softmin"}
_NORM_FNS = {"layer_norm", "group_norm", "instance_norm", "rms_norm", "normalize"}
_BROADCAST_FNS = {"expand", "expand_as", "broadcast_to", "repeat", "tile"}


def _library_dirs(module) -> tuple[str, ...]:
    """A package's folder, as imported and resolved (frames name files by their import path)."""
    d = os.path.dirname(module.__file__)
    return tuple({d + os.sep, os.path.dirname(os.path.realpath(module.__file__)) + os.sep})


_TORCH_DIRS = _library_dirs(torch)
_PYG_DIRS = _library_dirs(torch_geometric)


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
class CallTrace:
    """One torch function the model's own code called outside every submodule (in its
    ``forward`` or a helper of it), measured across the graphs like a module call."""

    op: str
    """The function as :func:`op_name` names it: ``torch.relu``, ``F.softmax``,
    ``Tensor.sub`` (``h - 1000``), ``Tensor.expand``."""
    file: str
    line: int
    code: str
    """The source line, stripped (``""`` when the file cannot be read)."""
    after: str
    """The last module call completed before it (its trace path; ``""``: none yet)."""
    level: str
    shape: list[int]
    graph_std: float
    constant: bool
    zero_fraction: float
    input_shape: list[int] | None
    """The first tensor argument's shape (None: no tensor argument)."""
    input_graph_std: float | None
    """``graph_std`` of the first floating argument with a row per graph or node (None: none)."""
    input_constant: bool | None
    input_min: float | None
    input_max: float | None

    @property
    def site(self) -> str:
        """``model.py:31`` (see :func:`site_text`)."""
        return site_text(self.file, self.line)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("graph_std", "zero_fraction", "input_graph_std", "input_min", "input_max"):
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
    op: str = ""
    """``where == "forward"``: the torch function in the model's code that makes every graph
    the same (:attr:`CallTrace.op`); ``""`` when no recorded call does."""
    file: str = ""
    """The file of that call, as Python names it (the path it was imported from)."""
    line: int | None = None
    code: str = ""
    """That call's source line."""
    op_input_std: float | None = None
    """The call's input's std across graphs (:attr:`input_std` stays the last module's)."""

    @property
    def site(self) -> str:
        """``model.py:31``, the call's file (relative to the working directory when inside it)
        and line; ``""`` without a call."""
        return site_text(self.file, self.line) if self.file else ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_std"], d["output_std"] = _r(self.input_std), _r(self.output_std)
        d["op_input_std"] = _r(self.op_input_std)
        d["site"] = self.site
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
    calls: list[CallTrace] = field(default_factory=list)
    """The torch functions the model's own code called outside every submodule, in call order
    (only those with a floating output of a row per graph or node)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, floats to 4 significant digits."""
        return {"num_graphs": self.num_graphs, "num_nodes": self.num_nodes,
                "score_shape": list(self.score_shape), "scores_std": _r(self.scores_std),
                "scores_constant": self.scores_constant,
                "culprit": self.culprit.to_dict() if self.culprit else None,
                "modules": [m.to_dict() for m in self.modules],
                "calls": [c.to_dict() for c in self.calls]}

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
        note = ""
        if c is not None and c.where == "forward":
            note = f"  <- culprit: forward code after {c.path}"
            note += f": {c.op} at {c.site}" if c.op else ""
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


# --------------------------------------------------------------------------- torch calls


def op_name(func: Any) -> str:
    """A torch function as ``__torch_function__`` receives it, in the words of the code that
    calls it: ``torch.relu``, ``F.softmax`` (``torch.nn.functional``), ``Tensor.sub`` (the
    method ``h - 1000`` calls), ``Tensor.shape`` (an attribute read)."""
    name = getattr(func, "__name__", None) or type(func).__name__
    owner = getattr(func, "__self__", None)
    if name == "__get__" and hasattr(owner, "__name__"):  # a getset descriptor: x.shape
        return f"Tensor.{owner.__name__}"
    module = getattr(func, "__module__", None) or ""
    qual = getattr(func, "__qualname__", None) or ""
    if module.startswith("torch.nn.functional") or module == "torch._C._nn":
        return f"F.{name}"
    if qual.startswith(("TensorBase.", "Tensor.")) or module == "torch._tensor":
        return f"Tensor.{name}"
    if module == "torch" or qual.startswith("_VariableFunctionsClass."):
        return f"torch.{name}"
    if module.startswith("torch._C._"):  # torch.special, torch.linalg, torch.fft bindings
        sub = module[len("torch._C._"):]
        return f"torch.{sub}.{name.removeprefix(sub + '_')}"  # special_expit: special.expit
    return f"{module}.{name}" if module else name


def _base(op: str) -> str:
    """What an op does, without its namespace or in-place mark: ``Tensor.relu_`` -> ``relu``."""
    name = op.rsplit(".", 1)[-1]
    if name.startswith("__") and name.endswith("__"):
        return name.strip("_")
    return name[:-1] if name.endswith("_") else name


def call_site(frame) -> tuple[str, int] | None:
    """``(file, line)`` of the code that made a torch call: the innermost frame outside torch
    from ``frame`` outward (``F.softmax`` runs torch's own Python before reaching a mode) and
    outside every mode's ``__torch_function__`` (a mode above passes the call on to the next
    one); None when that frame is inside PyG (the library's call, e.g. a pooling's scatter)."""
    f = frame
    while f is not None and (f.f_code.co_filename.startswith(_TORCH_DIRS)
                             or f.f_code.co_name == "__torch_function__"):
        f = f.f_back
    if f is None or f.f_code.co_filename.startswith(_PYG_DIRS):
        return None
    return f.f_code.co_filename, f.f_lineno


def _source_line(file: str, line: int) -> str:
    """The code of ``file:line``, stripped, without a trailing comment; ``""`` when unreadable."""
    text = linecache.getline(file, line).strip()
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.COMMENT:
                return text[: tok.start[1]].rstrip()
    except (tokenize.TokenError, SyntaxError):  # one line of a statement spread over several
        pass
    return text


def site_text(file: str, line: int | None) -> str:
    """``file:line`` with the file relative to the working directory when it lies inside it
    (``gatrank/doctor/buggy.py:150``), else as it is."""
    try:
        rel = os.path.relpath(file)
    except ValueError:  # another drive (Windows)
        rel = file
    shown = file if rel.startswith(os.pardir) or os.path.isabs(rel) else rel
    return f"{shown}:{line}"


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
    min: float
    max: float


def _input_of(args: tuple, kwargs: dict, b: _Batch) -> _Input | None:
    for v in (*args, *kwargs.values()):
        if (isinstance(v, Tensor) and v.is_floating_point() and v.numel() > 0
                and v.shape[0] in (b.num_graphs, b.num_nodes)):
            d = v.detach().double()
            return _Input(b.measure(v), tuple(v.shape), float(d.mean()), float(d.abs().mean()),
                          float(d.min()), float(d.max()))
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


def _arg(args: tuple, kwargs: dict, pos: int, name: str, default: Any = None) -> Any:
    return args[pos] if len(args) > pos else kwargs.get(name, default)


def _number(v: Any) -> float | None:
    if isinstance(v, Tensor):
        return float(v.detach().double().min()) if v.numel() else None
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _clamp_bounds(base: str, args: tuple, kwargs: dict) -> tuple[float | None, float | None]:
    """The bounds a clamp-like call applies (None: that side is open)."""
    if base == "hardtanh":
        return (_number(_arg(args, kwargs, 1, "min_val", -1.0)),
                _number(_arg(args, kwargs, 2, "max_val", 1.0)))
    if base == "clamp_min":
        return _number(_arg(args, kwargs, 1, "min")), None
    if base == "clamp_max":
        return None, _number(_arg(args, kwargs, 1, "max"))
    return _number(_arg(args, kwargs, 1, "min")), _number(_arg(args, kwargs, 2, "max"))


def _call_cause(base: str, args: tuple, kwargs: dict, inp: _Input | None,
                in_shape: list[int] | None, out: Tensor, m: _Measure,
                num_graphs: int) -> tuple[str, str]:
    """The doctor cause a torch call whose output is the same for every graph points to, and
    the sentence saying why, with the numbers (its input's range, the bound, the dimension)."""
    o = out.detach().double()
    value = _every_graph(m.per_graph).removeprefix("every graph ")
    across = f"across {num_graphs} graphs"
    if base in _CLAMP_FNS:
        lo, hi = _clamp_bounds(base, args, kwargs)
        if lo is not None and bool((o <= lo).all()):
            top = f" (input max {inp.max:.4g} {across})" if inp else ""
            return "dead_activations", (f"every input at or below its lower bound {lo:g}{top}, "
                                        f"so it outputs {lo:g} for every graph")
        if hi is not None and bool((o >= hi).all()):
            bottom = f" (input min {inp.min:.4g} {across})" if inp else ""
            return "score_head_saturated", (f"every input at or above its upper bound {hi:g}"
                                            f"{bottom}, so it outputs {hi:g} for every graph")
    if base in _RECTIFIER_FNS and inp is not None:
        if inp.max <= 0 and bool((o == 0).all()):
            sign = "negative" if inp.max < 0 else "at or below 0"
            return "dead_activations", (f"input max {inp.max:.4g} {across}: every input "
                                        f"{sign}, so it outputs 0 for every graph")
        return "dead_activations", (f"input max {inp.max:.4g} {across}: every input far below "
                                    f"the kink, so it outputs {value} for every graph")
    if base in _BOUNDED_FNS:
        lo, hi = _BOUNDED_FNS[base]
        margin = _SATURATION_EPS * (hi - lo)
        if bool(((o <= lo + margin) | (o >= hi - margin)).all()):
            where = (f" (input range [{inp.min:.4g}, {inp.max:.4g}] {across})" if inp else "")
            return "score_head_saturated", (f"every output within {margin:.2g} of its bounds "
                                            f"[{lo:g}, {hi:g}]{where}: saturated")
    if base in _SOFTMAX_FNS and in_shape:
        dim = _arg(args, kwargs, 1, "dim")
        dim = -1 if dim is None else int(dim)
        if -len(in_shape) <= dim < len(in_shape) and in_shape[dim] == 1:
            return "constant_output_layer", (f"a softmax over one unit (dim {dim} of shape "
                                             f"{list(in_shape)}): {value} for every input")
    if base in _NORM_FNS and in_shape:
        sizes = _arg(args, kwargs, 1, "normalized_shape") if base in ("layer_norm",
                                                                        "rms_norm") else None
        last = math.prod(sizes) if isinstance(sizes, (list, tuple)) else in_shape[-1]
        if last == 1:
            return "constant_output_layer", (f"a normalization over a dimension of size 1 "
                                             f"(input shape {list(in_shape)}): {value} for "
                                             "every input")
    if inp is None or inp.measure.level == "other":
        shape = f" (input shape {list(in_shape)})" if in_shape is not None else ""
        verb = "broadcasts" if base in _BROADCAST_FNS else "gives"
        return "constant_output_layer", (f"it {verb} one value{shape} to every graph: "
                                         f"{value}")
    return "constant_output_layer", (f"it maps inputs that vary across graphs (std "
                                     f"{inp.measure.graph_std:.3g}) to one output: {value}")


def _every_graph(per_graph: Tensor) -> str:
    """What every graph gets, when they all get the same: ``every graph 0``."""
    row = per_graph[0]
    if row.numel() == 1:
        return f"every graph {float(row[0]):.4g}"
    if bool((row == 0).all()):
        return f"every graph 0 in all {row.numel()} features"
    return f"every graph the same {row.numel()} values"


# --------------------------------------------------------------------------- the hooked pass


class _Call(NamedTuple):
    """A recorded torch call, with when it ran and, for one whose output is the same for
    every graph, the cause it points to and why."""

    trace: CallTrace
    seq: int
    cause: str = ""
    why: str = ""


def _creates(op: str) -> bool:
    """A call that makes a new tensor shaped like its input (``zeros_like``, ``new_ones``):
    its input's values never reach its output, so it kills no signal."""
    base = _base(op)
    return base.startswith("new_") or base.endswith("_like")


@dataclass
class _Recorder:
    """Hook state: each module call's input (pre-hook) and measures (hook), the model's own
    torch calls outside every module (:class:`_CallMode`), and the first module culprit."""

    batch: _Batch
    modules: list[ModuleTrace] = field(default_factory=list)
    returns_child: list[bool] = field(default_factory=list)
    """The call is a container's that returned the previous call's tensor (a Sequential's last
    child's output): the forward culprit names the child."""
    culprit: Culprit | None = None
    calls: Counter = field(default_factory=Counter)
    inputs: defaultdict = field(default_factory=lambda: defaultdict(list))
    last_out: Tensor | None = None
    depth: int = 0
    """Module calls running: a torch call at depth 0 is the model's own code's."""
    seq: int = 0
    module_seq: list[int] = field(default_factory=list)
    """When each of :attr:`modules` completed, on the clock :attr:`ops` share."""
    ops: list[_Call] = field(default_factory=list)

    def before(self, path: str):
        def take(module: nn.Module, args: tuple, kwargs: dict) -> None:
            self.depth += 1  # first: the measures below are the trace's calls, not the model's
            self.inputs[path].append(_input_of(args, kwargs, self.batch))

        return take

    def hook(self, path: str):
        def record(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            try:
                self._record(module, path, output)
            finally:
                self.depth -= 1

        return record

    def _record(self, module: nn.Module, path: str, output: Any) -> None:
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
        self.seq += 1
        self.module_seq.append(self.seq)
        self.returns_child.append(out is self.last_out
                                  and next(module.children(), None) is not None)
        self.last_out = out
        if self.culprit is None and m.constant and known and not mi.constant:
            self.culprit = self._module_culprit(module, name, inp, out, m)  # first one

    def add_call(self, op: str, site: tuple[str, int], inp: _Input | None,
                 in_shape: tuple[int, ...] | None, out: Tensor, args: tuple,
                 kwargs: dict) -> None:
        """Record one of the model's own torch calls (an output of a row per graph or node)."""
        m = self.batch.measure(out)
        if m.level == "other":
            return
        self.seq += 1
        file, line = site
        trace = CallTrace(
            op=op, file=file, line=line, code=_source_line(file, line),
            after=self.modules[-1].path if self.modules else "", level=m.level,
            shape=list(out.shape), graph_std=m.graph_std, constant=m.constant,
            zero_fraction=float((out == 0).double().mean()),
            input_shape=list(in_shape) if in_shape is not None else None,
            input_graph_std=inp.measure.graph_std if inp else None,
            input_constant=inp.measure.constant if inp else None,
            input_min=inp.min if inp else None, input_max=inp.max if inp else None)
        cause = why = ""
        if m.constant:
            cause, why = _call_cause(_base(op), args, kwargs, inp, trace.input_shape, out, m,
                                     self.batch.num_graphs)
        self.ops.append(_Call(trace, self.seq, cause, why))

    def _module_culprit(self, module: nn.Module, name: str, inp: _Input, out: Tensor,
                        m: _Measure) -> Culprit:
        cause, why = _cause(module, name.split("#")[0], inp, out)
        kind, std_in = short_type(module), inp.measure.graph_std
        evidence = (f"{name} ({kind}): input std {std_in:.3g} across graphs, output std "
                    f"{m.graph_std:.3g} ({_every_graph(m.per_graph)}); {why}")
        return Culprit(path=name, type=kind, where="module", cause=cause, input_std=std_in,
                       output_std=m.graph_std, evidence=evidence)

    def _culprit_call(self, since: int) -> _Call | None:
        """The call that makes every graph the same: the first after ``since`` (the last varying
        module) whose input varies and whose output does not, else the first there that
        broadcasts fewer values than graphs to every graph, else the first such call at all."""
        later = [c for c in self.ops if c.seq > since]

        def dies(c: _Call) -> bool:
            return c.trace.constant and c.trace.input_constant is False \
                and not _creates(c.trace.op)

        spread = [c for c in later if c.trace.constant and c.trace.input_graph_std is None]
        return next(iter([c for c in later if dies(c)] + spread
                         + [c for c in self.ops if dies(c)]), None)

    def forward_culprit(self, scores_std: float, scores: Tensor) -> Culprit | None:
        """The model's code after its last varying module made the scores constant (at the call
        that does, when one was recorded); None when no module's output varies (the batch
        itself does not)."""
        varying = [i for i, m in enumerate(self.modules)
                   if m.level in ("graph", "node") and not m.constant]
        if not varying:
            return None
        i = varying[-1]
        since = self.module_seq[i]
        while i > 0 and self.returns_child[i]:
            i -= 1
        last = self.modules[i]
        every = ("every module's output varies across graphs but the scores do not: "
                 if not any(m.constant for m in self.modules) else "")
        state = (f"{every}the last module whose output varies, {last.path} ({last.type}), "
                 f"has output std {last.graph_std:.3g} across graphs; the scores have std "
                 f"{scores_std:.3g} ({_every_graph(scores)})")
        found = dict(path=last.path, type=last.type, where="forward",
                     input_std=last.graph_std, output_std=scores_std)
        call = self._culprit_call(since)
        if call is None:
            return Culprit(**found, cause="constant_output_layer", evidence=(
                f"{state}: the model's forward code after {last.path} (a functional softmax, "
                "relu, clamp or expand in forward) makes the scores constant"))
        t = call.trace
        code = f" (`{t.code}`)" if t.code else ""
        return Culprit(**found, cause=call.cause, evidence=(
            f"{t.op} at {t.site}{code}: {call.why}. {state[0].upper()}{state[1:]}: the "
            f"model's forward code after {last.path} makes them constant"),
            op=t.op, file=t.file, line=t.line, code=t.code, op_input_std=t.input_graph_std)


class _CallMode(TorchFunctionMode):
    """Active during the traced forward pass only: hands each torch call the model's own code
    makes outside every submodule (:attr:`_Recorder.depth` 0, not from inside PyG) to
    :meth:`_Recorder.add_call`. Torch pops the mode while this runs: the measures and ``func``'s
    own inner calls do not come back here."""

    def __init__(self, rec: _Recorder) -> None:
        super().__init__()
        self.rec = rec

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        site = None if self.rec.depth else call_site(sys._getframe(1))
        if site is None or getattr(func, "__name__", "") == "__get__":  # x.shape, x.device
            return func(*args, **kwargs)
        op = op_name(func)
        in_shape = next((tuple(v.shape) for v in (*args, *kwargs.values())
                         if isinstance(v, Tensor)), None)
        # an in-place call changes its input: measure it before the call
        in_place = op.endswith("_") and not op.endswith("__")
        inp = _input_of(args, kwargs, self.rec.batch) if in_place else None
        out = func(*args, **kwargs)
        t = _first_float(out) if isinstance(out, Tensor) else None
        if t is not None and t.numel() and t.dim():
            if not in_place:
                inp = _input_of(args, kwargs, self.rec.batch)
            self.rec.add_call(op, site, inp, in_shape, t, args, kwargs)
        return out


def during_forward(model: nn.Module, mode: TorchFunctionMode) -> list:
    """Hooks on ``model`` that keep ``mode`` active while its ``forward`` runs, and only then
    (entered after the model's other forward pre-hooks, e.g. the argument adapter of
    :func:`gatrank.model.adapt_forward`; left even when ``forward`` raises); the hooks'
    handles, to remove them."""
    entered = [0]  # a forward that calls the model again enters once

    def enter(module: nn.Module, args: tuple) -> None:
        if entered[0] == 0:
            mode.__enter__()
        entered[0] += 1

    def leave(module: nn.Module, args: tuple, output: Any) -> None:
        if entered[0] == 0:  # a pre-hook before ours raised: never entered
            return
        entered[0] -= 1
        if entered[0] == 0:
            mode.__exit__(None, None, None)

    return [model.register_forward_pre_hook(enter),
            model.register_forward_hook(leave, always_call=True)]


@torch.no_grad()
def signal_trace(model: nn.Module, batch, *, device: torch.device | str | None = None
                 ) -> SignalTrace:
    """Forward hooks on every submodule over one fixed batch (eval mode, no gradients, the
    model's train/eval state restored after): per module call, in forward order, how much its
    output varies across graphs; the same for each torch call the model's own code makes
    outside every submodule (:attr:`SignalTrace.calls`, with file and line); and the culprit
    where the variation dies.

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
        handles += during_forward(model, _CallMode(rec))
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
                       scores_std=scores_std, scores_constant=scores_constant, culprit=culprit,
                       calls=[c.trace for c in rec.ops])
