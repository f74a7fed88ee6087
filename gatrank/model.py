"""Graph ranking models: the GAT ranker, a linear baseline, and a user's own model.

Every model maps a PyG batch of graphs to one score per graph (``[num_graphs]``). A user's
model (an import string, a class or a factory) is built by :func:`build_model`: constructor
arguments gatrank knows (``in_channels``, ``out_channels``, ``edge_dim``) are filled in, the
rest come from ``model.kwargs``; a ``forward`` written the PyG way (``forward(x, edge_index,
edge_attr, batch)``) is called with the batch's tensors by name (:func:`adapt_forward`).
Scores come out of a model through :func:`score_batch`, which names a wrong shape and what it
means (:class:`ScoreShapeError`), and says how to feed an ``nn.Embedding`` gatrank's float
node features (:func:`embedding_hint`).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch_geometric.data.data import BaseData
from torch_geometric.nn import (
    GATConv,
    GATv2Conv,
    MessagePassing,
    global_add_pool,
    global_max_pool,
    global_mean_pool,
)

from gatrank.config import ConfigError, ModelConfig
from gatrank.model_hints import embedding_hint, unset_global
from gatrank.plugins import load_object

__all__ = ["GATRanker", "LinearBaseline", "ForwardByName", "ScoreShapeError", "adapt_forward",
           "build_model", "check_scores", "pool", "adds_self_loops", "reads_edge_attr",
           "score_batch", "embedding_hint"]

_POOLS = {"mean": global_mean_pool, "max": global_max_pool, "add": global_add_pool}


def pool(x: Tensor, batch: Tensor, how: str, size: int | None = None) -> Tensor:
    """Global pooling of node features ``[N, F]`` to ``[G, F]`` (``[G, 2F]`` for mean+max)."""
    if how == "mean+max":
        return torch.cat([global_mean_pool(x, batch, size), global_max_pool(x, batch, size)], -1)
    return _POOLS[how](x, batch, size)


class GATRanker(nn.Module):
    """Graph attention network that scores whole graphs for ranking.

    Architecture: ``num_layers`` GAT layers (PyG ``GATConv`` or ``GATv2Conv``; heads
    concatenated), ELU between layers, residual connections where widths match, dropout on
    features and attention, global pooling, then the runbook's score head
    ``Linear(pool_dim, hidden) → LayerNorm(hidden) → ReLU → Linear(hidden, 1)``, for
    node features ``in_channels`` (F) wide and a :class:`~gatrank.config.ModelConfig`.

    Shapes: batch.x ``[N, F]``, batch.edge_index ``[2, E]``, batch.batch ``[N]`` → scores
    ``[G]``; :meth:`embed` → ``[G, pool_dim]``.
    """

    def __init__(self, in_channels: int, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or ModelConfig()
        self.in_channels = in_channels
        conv_cls = GATConv if cfg.conv == "gat" else GATv2Conv
        per_head = cfg.hidden_dim // cfg.heads
        self.convs = nn.ModuleList(
            conv_cls(in_channels if i == 0 else cfg.hidden_dim, per_head, heads=cfg.heads,
                     concat=True, dropout=cfg.dropout) for i in range(cfg.num_layers))
        self.dropout = nn.Dropout(cfg.dropout)
        self.pool_dim = cfg.hidden_dim * (2 if cfg.pooling == "mean+max" else 1)
        norm = [] if cfg.head == "plain" else [nn.LayerNorm(cfg.hidden_dim)]  # no random init
        bound = {"sigmoid": [nn.Sigmoid()], "tanh": [nn.Tanh()]}.get(cfg.head, [])
        self.score_head = nn.Sequential(nn.Linear(self.pool_dim, cfg.hidden_dim), *norm,
                                        nn.ReLU(), nn.Linear(cfg.hidden_dim, 1), *bound)

    def node_embeddings(self, batch) -> list[Tensor]:
        """Node embeddings after each GAT layer: ``num_layers`` tensors ``[N, hidden]``."""
        x, edge_index, outs = batch.x, batch.edge_index, []
        for i, conv in enumerate(self.convs):
            h = conv(self.dropout(x), edge_index)
            if self.config.residual and i > 0:
                h = h + x
            x = torch.nn.functional.elu(h)
            outs.append(x)
        return outs

    def embed(self, batch) -> Tensor:
        """Pooled graph embedding ``[G, pool_dim]`` (the runbook's Step 2C hook)."""
        x = self.node_embeddings(batch)[-1]
        return pool(x, batch.batch, self.config.pooling, batch.num_graphs)

    def forward(self, batch) -> Tensor:
        return self.score_head(self.embed(batch)).squeeze(-1)  # (G,)


class LinearBaseline(nn.Module):
    """Mean-pooled input node features → one linear score: the runbook's "simpler baseline"
    (batch.x ``[N, F]`` → scores ``[G]``)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.linear = nn.Linear(in_channels, 1)

    def embed(self, batch) -> Tensor:
        return global_mean_pool(batch.x, batch.batch, batch.num_graphs)

    def forward(self, batch) -> Tensor:
        return self.linear(self.embed(batch)).squeeze(-1)


# --------------------------------------------------------------------------- a user's model


def build_model(in_channels: int, config: ModelConfig | None = None,
                spec: str | Callable[..., nn.Module] = "", *,
                edge_dim: int | None = None) -> nn.Module:
    """Build the model named by ``spec``: empty or ``gat`` → :class:`GATRanker`, ``linear`` →
    :class:`LinearBaseline`, else an import string ``package.module:Name`` of a class or
    factory returning an ``nn.Module``, or that class or factory itself (messages name it by
    its qualified name); a module instance is returned as it is. A user's constructor gets,
    where its signature names them and ``config.kwargs`` does not, ``in_channels``,
    ``out_channels=1`` and ``edge_dim`` (if the graphs have ``edge_attr``); the rest come from
    ``config.kwargs`` (``--model-kwargs``; gatrank's own models ignore them). A factory naming
    none of these is called as ``factory(in_channels, **kwargs)``; a factory object taking
    nothing but what gatrank fills in (``lambda f: Net(f, 64)``) gets no kwargs; then
    :func:`adapt_forward`.

    Raises:
        ValueError: a malformed or unimportable ``spec``.
        ConfigError: required constructor arguments missing (named, with the fix); kwargs the
            constructor does not take, or ``in_channels``/``edge_dim`` not the graphs' widths;
            a ``NameError`` for a global its module does not set on import (``__cause__``).
        TypeError: the factory returned something that is not an ``nn.Module``.
    """
    if isinstance(spec, nn.Module):
        return adapt_forward(spec)
    kwargs = dict(config.kwargs) if config is not None else {}
    if isinstance(spec, str):
        if spec in ("", "gat"):
            return GATRanker(in_channels, config)
        if spec == "linear":
            return LinearBaseline(in_channels)
        factory, label = load_object(spec, what="model"), f"--model {spec}"
    else:
        factory, label = spec, f"model {_name(spec)}"
        if not isinstance(spec, type) and _builds_itself(spec):
            kwargs = {}  # factory(in_channels) configures its model itself
    args, kwargs = _constructor_arguments(factory, label, in_channels, edge_dim, kwargs)
    try:
        model = factory(*args, **kwargs)
    except NameError as exc:
        said = unset_global(exc, factory, f"the model from the import string {spec}"
                             if isinstance(spec, str) else label)
        if said is None:
            raise
        raise ConfigError(said) from exc
    if not isinstance(model, nn.Module):
        raise TypeError(f"{label}: calling it with in_channels={in_channels} returned "
                        f"{type(model).__name__}, not a torch.nn.Module")
    return adapt_forward(model)


_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
_VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def _constructor_arguments(factory: Callable, label: str, in_channels: int,
                           edge_dim: int | None, kwargs: dict[str, Any]
                           ) -> tuple[list[Any], dict[str, Any]]:
    """``(args, kwargs)`` to call ``factory`` with: the user's kwargs, gatrank's known
    arguments where the signature names them, ``in_channels`` positionally where it names none.
    """
    for key, width, what in (("in_channels", in_channels, "node"), ("edge_dim", edge_dim, "edge")):
        if key in kwargs and width is not None and kwargs[key] != width:  # the same is fine
            edges = f" (edge features {edge_dim} wide)" if edge_dim and key == "in_channels" else ""
            raise ConfigError(
                f"{label}: model.kwargs (--model-kwargs) sets {key}={kwargs[key]!r}, but the "
                f"graphs' {what} features are {width} wide{edges}. gatrank fills in {key} from "
                f"the graphs ({key}={width}): leave {key} out of the kwargs.")
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):  # a builtin without a signature: today's convention
        return [in_channels], kwargs
    params = sig.parameters
    named = {n for n, p in params.items() if p.kind not in _VARIADIC
             and p.kind is not inspect.Parameter.POSITIONAL_ONLY}
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(kwargs) - named)
        if unknown:
            raise ConfigError(
                f"{label}: model.kwargs (--model-kwargs) names {', '.join(unknown)}, "
                f"which {_name(factory)} does not take; its arguments: {', '.join(params)}"
            )
    known = {"in_channels": in_channels, "out_channels": 1}
    if edge_dim is not None:  # without edge features the constructor's default applies
        known["edge_dim"] = edge_dim
    for key, value in known.items():
        if key in named and key not in kwargs:
            kwargs[key] = value
    args: list[Any] = []
    first = next(iter(params.values()), None)
    if "in_channels" not in named and first is not None and first.name not in kwargs and (
            first.kind in _POSITIONAL or first.kind is inspect.Parameter.VAR_POSITIONAL):
        args = [in_channels]  # factory(in_channels): the convention before named arguments
    bound = sig.bind_partial(*args, **kwargs).arguments
    missing = [n for n, p in params.items() if p.default is inspect.Parameter.empty
               and p.kind not in _VARIADIC and n not in bound]
    if missing:
        raise ConfigError(_missing_message(factory, label, sig, missing, in_channels, edge_dim))
    return args, kwargs


def _builds_itself(factory: Callable) -> bool:
    """A factory whose parameters are all gatrank's to fill in (the first positional one takes
    ``in_channels``): it configures its model itself, ``model.kwargs`` are not for it (the
    doctor's and a notebook's ``factory(in_channels)`` wrap :func:`build_model` with them)."""
    try:
        params = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):
        return True
    return all(p.name in ("in_channels", "out_channels", "edge_dim")
               or (i == 0 and p.kind in _POSITIONAL) for i, p in enumerate(params))


def _missing_message(factory: Callable, label: str, sig: inspect.Signature,
                     missing: list[str], in_channels: int, edge_dim: int | None) -> str:
    """Which required constructor arguments are missing, and where each comes from."""
    user, sig = [n for n in missing if n != "edge_dim"], sig.replace(return_annotation=sig.empty)
    parts = [f"{label}: {_name(factory)}{sig} needs {', '.join(missing)}."]
    if user:
        example = ", ".join(f'"{n}": ...' for n in user)
        parts.append(f"Pass {', '.join(user)} in --model-kwargs (config key model.kwargs), "
                     f"e.g. --model-kwargs '{{{example}}}'.")
    if "edge_dim" in missing:
        parts.append("edge_dim is the edge-feature width, which gatrank fills in from the "
                     "graphs' edge_attr, but these graphs have no edge features: give them "
                     "edge_attr (molecules from SMILES get bond features) or pass edge_dim in "
                     "--model-kwargs if the model can do without.")
    parts.append(f"gatrank fills in in_channels={in_channels}, out_channels=1 and edge_dim "
                 f"(here {edge_dim}) where the constructor names them.")
    return " ".join(parts)


def _name(obj: Any) -> str:
    return getattr(obj, "__qualname__", None) or type(obj).__name__


def _forward_of(model: Any) -> Callable | None:
    """The ``forward`` a model, model class or import string would be called through."""
    if isinstance(model, str):
        model = None if model in ("", "gat", "linear") else load_object(model, what="model")
    if isinstance(model, nn.Module) or (isinstance(model, type) and issubclass(model, nn.Module)):
        return model.forward
    return None


def reads_edge_attr(model: Any) -> bool:
    """Whether a model (a module, a module class or an import string) takes ``edge_attr``: its
    ``forward`` has a parameter of that name. A factory function or a ``forward(batch)`` model
    may still read ``batch.edge_attr``; that is not visible without running it (``False``)."""
    forward = _forward_of(model)
    if forward is None:
        return False
    try:
        return "edge_attr" in inspect.signature(forward).parameters
    except (TypeError, ValueError):
        return False


def adds_self_loops(model: nn.Module) -> bool:
    """Whether every message-passing layer of ``model`` (an instance, e.g. from
    :func:`build_model`) adds self-loops: PyG's ``add_self_loops`` is True on each
    ``MessagePassing`` submodule (``GATConv``, ``GATv2Conv``, ``GCNConv`` by default), so a
    node without edges still attends to, or aggregates, itself. ``False`` without such layers
    or for one without the attribute (``GraphConv``, ``SAGEConv``, ``GINConv``)."""
    layers = [m for m in model.modules() if isinstance(m, MessagePassing)]
    return bool(layers) and all(getattr(m, "add_self_loops", None) is True for m in layers)


# --------------------------------------------------------------------------- forward by name

_TENSOR_NAMES = ("x", "edge_index")
"""A ``forward`` naming either of these takes tensors (the PyG way), not a batch."""


class ForwardByName:
    """A forward pre-hook turning ``model(batch)`` into ``model(x=batch.x, edge_index=...,
    ...)`` for a ``forward`` written the PyG way (see :func:`adapt_forward`). Each parameter
    gets, by its name: ``x``, ``edge_index``, ``edge_attr``, ``batch`` and any other attribute
    of the batch (``pos``...); ``num_graphs``, ``num_nodes`` the counts; ``batch_size`` the
    number of graphs only where required (optional in PyG's ``GCN``, ``GAT``..., it means a
    sampled mini-batch's seed nodes). Optional ones the batch lacks keep their defaults."""

    def __init__(self, names: Mapping[str, bool], owner: str) -> None:
        self.names = dict(names)
        """Parameter name -> required."""
        self.owner = owner

    def arguments(self, batch: BaseData) -> dict[str, Any]:
        """The keyword arguments of ``forward`` for ``batch``."""
        out: dict[str, Any] = {}
        for name, required in self.names.items():
            if name == "num_graphs" or (name == "batch_size" and required):
                out[name] = batch.num_graphs
            elif name == "num_nodes":
                out[name] = batch.num_nodes
            elif (name in ("x", "edge_index", "edge_attr", "batch") or name in batch) \
                    and getattr(batch, name, None) is not None:
                out[name] = getattr(batch, name)
            elif required:  # a required one the batch lacks (or holds as None)
                raise ValueError(self._missing(name, batch))
        return out

    def _missing(self, name: str, batch: BaseData) -> str:
        what = ("the graphs have no edge features (edge_attr)" if name == "edge_attr"
                else f"the batch has no attribute {name!r} (it has {', '.join(batch.keys())})")
        return (f"{self.owner}.forward requires {name!r} but {what}. gatrank passes x, "
                "edge_index, edge_attr, batch, num_graphs, batch_size and the batch's other "
                "attributes by name: give the parameter a default, or give the graphs that "
                "attribute")

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict
                 ) -> tuple[tuple, dict[str, Any]] | None:
        # only gatrank's model(batch) is rewritten: the user's model(x, edge_index, ...) is not
        if len(args) == 1 and not kwargs and isinstance(args[0], BaseData):
            return (), self.arguments(args[0])
        return None


def _adapter(model: nn.Module) -> ForwardByName | None:
    return next((h for h in model._forward_pre_hooks.values()
                 if isinstance(h, ForwardByName)), None)


def adapt_forward(model: nn.Module) -> nn.Module:
    """Let gatrank call ``model(batch)`` on a model whose ``forward`` takes tensors by name
    (``forward(x, edge_index, edge_attr, batch)``, as PyG's models do); returns ``model``. A
    ``forward`` naming ``x`` or ``edge_index`` gets a :class:`ForwardByName` forward pre-hook
    (idempotent); any other (``forward(batch)``) is left as it is. The module is not wrapped:
    its parameter names, ``state_dict`` keys and submodules stay the user's.

    Raises:
        TypeError: ``forward`` has positional-only parameters (they cannot be passed by name).
    """
    if _adapter(model) is not None:
        return model
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return model
    if not any(n in params for n in _TENSOR_NAMES):
        return model
    owner = type(model).__name__
    if any(p.kind is inspect.Parameter.POSITIONAL_ONLY for p in params.values()):
        raise TypeError(f"{owner}.forward has positional-only parameters: gatrank passes "
                        "x, edge_index, edge_attr and batch by name; drop the '/'")
    names = {n: p.default is inspect.Parameter.empty for n, p in params.items()
             if p.kind not in _VARIADIC}
    model.register_forward_pre_hook(ForwardByName(names, owner), with_kwargs=True, prepend=True)
    return model


# --------------------------------------------------------------------------- score shapes


class ScoreShapeError(ValueError):
    """A model's scores are not one per graph (``[G]`` or ``[G, 1]``); the message says what
    the shape it returned means and how to fix the model."""

    def __init__(self, message: str, shape: list[int] | None, num_graphs: int,
                 num_nodes: int, meaning: str = "") -> None:
        super().__init__(message)
        self.shape = shape
        """The shape returned (``None``: not a tensor)."""
        self.num_graphs, self.num_nodes = num_graphs, num_nodes
        self.meaning = meaning
        """What the shape means and the fix, the message's last sentences."""


def score_batch(model: nn.Module, batch: BaseData) -> Tensor:
    """``model(batch)`` as one score per graph, ``[G]``: the one way scores come out of a model
    (training steps, scoring, the checks, the doctor). What the model raises is raised as it
    is (an Embedding's error on float features with :func:`embedding_hint`'s hint added).

    Raises:
        ScoreShapeError: the output is not ``[G]`` or ``[G, 1]`` (see :func:`check_scores`).
    """
    try:
        out = model(batch)
    except (RuntimeError, IndexError) as exc:
        embedding_hint(exc, getattr(batch, "x", None))
        raise  # the same exception and traceback: the doctor finds the user's frame in it
    return check_scores(out, batch, model=model)


def check_scores(scores: Any, batch: BaseData, *, model: nn.Module | None = None) -> Tensor:
    """``scores`` reshaped to ``[G]`` when they are ``[G]`` or ``[G, 1]`` for a batch of ``G``
    graphs (a scalar too when ``G`` is 1).

    Raises:
        ScoreShapeError: any other shape, saying what it means: one score for the whole batch
            (pooling without ``batch``), one per node (no readout), ``[G, G]`` (a broadcast),
            ``[G, k]`` (several outputs); or not a tensor."""
    g = int(batch.num_graphs)
    if isinstance(scores, Tensor) and (tuple(scores.shape) in ((g,), (g, 1))
                                       or (g == 1 and scores.dim() == 0)):
        return scores.reshape(-1)
    base = getattr(model, "module", model)  # DDP's wrapper holds the model as .module
    who = f"model {type(base).__name__}" if base is not None else "the model"
    n = int(batch.num_nodes)
    if not isinstance(scores, Tensor):
        fix = ("Return one score per graph, a [G] or [G, 1] tensor (a model returning "
               "(scores, extras) needs a forward that returns only the scores).")
        raise ScoreShapeError(
            f"{who} returned {type(scores).__name__}, not a tensor of scores: {fix[0].lower()}"
            f"{fix[1:-1]}", None, g, n, fix)
    shape = list(scores.shape)
    meaning = _shape_meaning(shape, g, n)
    raise ScoreShapeError(f"{who} returned scores of shape {shape} for a batch of {g} graphs "
                          f"with {n} nodes (G = {g}, N = {n}); gatrank needs one score per "
                          f"graph, [G] or [G, 1]. {meaning}", shape, g, n, meaning)


def _shape_meaning(shape: list[int], g: int, n: int) -> str:
    """What a wrong score shape means and the fix."""
    if math.prod(shape) == 1:
        return ("One score for the whole batch: the model pools over all nodes of the batch at "
                "once, which is what pooling without the batch vector does (x.mean(0), "
                "x.sum(0), global_mean_pool(x) or global_mean_pool(x, None)); every graph then "
                "gets the same score. Fix: pool per graph with the batch vector, "
                "global_mean_pool(x, batch) (batch = data.batch).")
    if shape == [g, g]:
        return ("[G, G] is a broadcast: a [G] tensor combined with a [G, 1] one (e.g. a [G, 1] "
                "head output plus a [G] term, or scores[:, None] - scores[None, :]). Fix: "
                "squeeze(-1) the head's [G, 1] output before combining it with [G] tensors, and "
                "return [G] or [G, 1].")
    if shape[:1] == [n] and (len(shape) == 1 or shape[1:] == [1]):
        return ("One score per node (N = the number of nodes): the model has no readout. Fix: "
                "pool node outputs to one per graph before returning them, e.g. "
                "global_mean_pool(h, batch) or global_add_pool(h, batch) (batch = data.batch).")
    if shape[:1] == [n] and len(shape) == 2:
        return (f"{shape[1]} outputs per node: no readout, and several output channels. Fix: "
                "pool node outputs per graph with global_mean_pool(h, batch) and end in one "
                "output (out_channels=1, or Linear(hidden, 1)).")
    if len(shape) == 2 and shape[0] == g:
        return (f"{shape[1]} outputs per graph: the model's last layer has {shape[1]} output "
                "channels. Fix: end in one output, out_channels=1 (gatrank fills it in where "
                "the constructor names out_channels) or Linear(hidden, 1); or return the one "
                "column to rank by.")
    return "Fix: return one score per graph, shaped [G] or [G, 1]."
