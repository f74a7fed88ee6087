"""The signal trace's results: one module call's measures (:class:`ModuleTrace`), one torch
call of the model's own code (:class:`CallTrace`), the culprit where the ranking signal dies
(:class:`Culprit`) and the whole trace (:class:`SignalTrace`) with its JSON and terminal forms;
and :func:`short_type`, a module in a few characters. Computed by
:func:`gatrank.doctor.trace.signal_trace`."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from gatrank.doctor.trace_measures import site_text

__all__ = ["ModuleTrace", "CallTrace", "Culprit", "SignalTrace", "short_type"]

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
