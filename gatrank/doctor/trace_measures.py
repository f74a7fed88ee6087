"""How the signal trace measures: a tensor's spread across the graphs of a batch (graph or node
level), torch calls by name and by the user's file and line, and what a torch call that gives
every graph the same output points to (the cause, in words with its numbers). Used by
:mod:`gatrank.doctor.trace`."""

from __future__ import annotations

import io
import linecache
import math
import os
import tokenize
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch_geometric
from torch import Tensor
from torch_geometric.utils import scatter

from gatrank.checks.probes import _SATURATION_EPS
from gatrank.runtime import package_dirs

__all__ = ["CONSTANT_RTOL", "op_name", "call_site", "site_text"]


CONSTANT_RTOL = 1e-6
"""Outputs are *constant* across graphs when, for every feature, max - min over the graphs is at
most this times ``max(1, max |value|)``: float32 round-off, not a signal."""
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


_TORCH_DIRS = package_dirs(torch)
_PYG_DIRS = package_dirs(torch_geometric)



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
