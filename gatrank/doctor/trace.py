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
import math
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from gatrank.checks.probes import _SATURATION_EPS, BOUNDED_TYPES, eval_mode, weight_kind
from gatrank.doctor.trace_measures import (
    CONSTANT_RTOL,
    _base,
    _Batch,
    _call_cause,
    _every_graph,
    _first_float,
    _Input,
    _input_of,
    _is_constant,
    _Measure,
    _source_line,
    _spread,
    call_site,
    op_name,
    site_text,
)
from gatrank.doctor.trace_types import CallTrace, Culprit, ModuleTrace, SignalTrace, short_type

__all__ = ["ModuleTrace", "CallTrace", "Culprit", "SignalTrace", "signal_trace", "short_type",
           "op_name", "call_site", "site_text", "during_forward", "CONSTANT_RTOL"]


# activations that die: a unit below the kink for every graph gives every graph the same value
_RECTIFIERS: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.CELU, nn.SELU, nn.GELU,
    nn.SiLU, nn.Mish, nn.Hardswish)

_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm,
          nn.modules.instancenorm._InstanceNorm, nn.RMSNorm)
_SOFTMAXES = (nn.Softmax, nn.LogSoftmax, nn.Softmin)

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
