"""The fault zoo: one named, injectable fault for every cause the doctor knows.

Each :class:`Fault` reproduces one cause id of :data:`gatrank.doctor.CAUSES` by changing the
data, the config, the model or the loss, the way that mistake happens in real code (NaN
features, a ``.detach()`` in the loss, a sigmoid head driven to its limits, a learning rate
off by four orders of magnitude...). The faults of the user-code causes put a user's own model
or loss in place of the diagnosed one, by import string, as a user passes theirs: the models
and losses of :mod:`gatrank.doctor.buggy` (a ``LayerNorm(1)`` score head, a softmax over one
unit, a ``torch.relu`` after an offset, zero init, pooling without ``batch``, no readout, a
broadcasting MSE, a model that raises on large graphs). :func:`inject` applies a fault to a
setup; ``gatrank doctor --inject NAME`` runs the doctor on the embedded data with it, and the
zoo test checks that the doctor names the right cause for every fault and, where a fault says
what it put where (``Fault.evidence``), that the evidence names it.

Faults are deterministic: data faults take a seed, everything else is a fixed edit.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from gatrank.config import Config
from gatrank.losses import LossOutput, pairwise_rank_loss
from gatrank.plugins import load_object

__all__ = [
    "Fault",
    "Injected",
    "FAULTS",
    "UserLoss",
    "list_faults",
    "get_fault",
    "inject",
]

logger = logging.getLogger(__name__)

UserLoss = Callable[[Tensor, Tensor], "Tensor | LossOutput"]
"""A loss as a user passes it: ``(scores [B], targets [B]) -> scalar`` (or a LossOutput)."""


@dataclass(frozen=True)
class Fault:
    """A named, injectable fault.

    Attributes:
        name: the fault's name (``gatrank doctor --inject NAME``).
        cause: the cause id the doctor must name first.
        description: what the fault does, in one sentence.
        where: ``data``, ``config``, ``model`` or ``loss`` (the first thing it edits).
        also: cause ids that genuinely overlap with ``cause`` for this fault (e.g. a dead ReLU
            head also has vanishing gradients): the zoo accepts ``cause`` second behind one.
        data: ``(graphs, seed) -> graphs``, a new GraphSet (the input is not modified).
        config: ``(config, graphs) -> config``.
        model_edit: ``module -> module``, applied to every freshly built model.
        loss: ``(base loss, config) -> loss`` in the user form ``(scores, targets) -> scalar``;
            ``base`` is None for gatrank's own loss.
        model: a user model by import string (``gatrank.doctor.buggy:Name``), diagnosed in
            place of the one given.
        user_loss: a user loss by import string, trained with in place of the one given.
        evidence: strings the evidence of the fault's cause must contain: the module path and
            type, parameter, loss or exception the fault put there (``head.3``).
        graphs: the graphs the fault needs at least (0: the zoo's sample): a cause judged on
            held-out graphs needs a sample large enough to judge (``no_signal``).
    """

    name: str
    cause: str
    description: str
    where: str
    also: tuple[str, ...] = ()
    data: Callable | None = None
    config: Callable | None = None
    model_edit: Callable[[nn.Module], nn.Module] | None = None
    loss: Callable | None = None
    model: str | None = None
    user_loss: str | None = None
    evidence: tuple[str, ...] = ()
    graphs: int = 0


@dataclass
class Injected:
    """A setup after :func:`inject`: what the doctor (or ``train``) runs."""

    graphs: object
    """The (possibly edited) GraphSet."""
    config: Config
    model_edit: Callable[[nn.Module], nn.Module] | None
    """Applied to every model built for this setup (None: no edit)."""
    loss: str | UserLoss | None
    """The loss to train with: the user's, the fault's wrapper around it, or the fault's own
    user loss (import string)."""
    fault: Fault
    model: str | None = None
    """A user model (import string) the fault puts in place of the one diagnosed; None: keep
    it."""


# --------------------------------------------------------------------------- data faults


def _with_graphs(gs, graphs: list, y: np.ndarray | None = None):
    """A GraphSet like ``gs`` with new graphs (and targets in the table when ``y`` is given)."""
    table = gs.table.copy()
    if y is not None:
        table["y"] = y
    return type(gs)(graphs, table, gs.num_features, gs.manifest, list(gs.dropped), gs.dataset)


def _every(gs, k: int, seed: int) -> set[int]:
    """Every ``k``-th graph from a seeded offset: the rows a data fault breaks."""
    start = int(np.random.default_rng(seed).integers(k))
    return set(range(start, len(gs), k))


def _nan_features(gs, seed: int):
    bad = _every(gs, 8, seed)
    graphs = []
    for i, g in enumerate(gs.graphs):
        g = copy.copy(g)
        if i in bad:
            g.x = g.x.clone()
            g.x[0, 0] = math.nan
        graphs.append(g)
    return _with_graphs(gs, graphs)


def _empty_graphs(gs, seed: int):
    bad = _every(gs, 8, seed)
    graphs = []
    for i, g in enumerate(gs.graphs):
        g = copy.copy(g)
        if i in bad:
            g.edge_index = g.edge_index[:, :0]
            if "edge_attr" in g:
                g.edge_attr = g.edge_attr[:0]
        graphs.append(g)
    return _with_graphs(gs, graphs)


def _set_targets(gs, y: np.ndarray):
    graphs = []
    for g, v in zip(gs.graphs, y, strict=True):
        g = copy.copy(g)
        g.y = torch.tensor([float(v)], dtype=torch.float32)
        graphs.append(g)
    return _with_graphs(gs, graphs, y)


def _constant_targets(gs, seed: int):
    return _set_targets(gs, np.full(len(gs), float(np.median(gs.table["y"]))))


def _shuffled_labels(gs, seed: int):
    y = gs.table["y"].to_numpy(dtype=np.float64)
    return _set_targets(gs, np.random.default_rng(seed).permutation(y))


def _identical_features(gs, seed: int):
    first = gs.graphs[0].x[0]  # (F,) one atom's features, given to every node of every graph
    graphs = []
    for g in gs.graphs:
        g = copy.copy(g)
        g.x = first.expand_as(g.x).clone()
        graphs.append(g)
    return _with_graphs(gs, graphs)


def _raw_units(gs, seed: int):
    """pIC50 back to the IC50 it came from, in nM (``10 ** (9 - pIC50)``): the column a
    ChEMBL export has before anyone takes the log."""
    y = gs.table["y"].to_numpy(dtype=np.float64)
    return _set_targets(gs, 10.0 ** (9.0 - y))


def _singleton_groups(gs, seed: int):
    graphs = []
    for i, g in enumerate(gs.graphs):
        g = copy.copy(g)
        g.group = torch.tensor([i], dtype=torch.long)
        graphs.append(g)
    out = _with_graphs(gs, graphs)
    out.table["group"] = [f"q{i}" for i in range(len(gs))]
    return out


# --------------------------------------------------------------------------- model edits


def _linears_before(head: nn.Module, kinds: tuple[type, ...]) -> list[nn.Linear]:
    """The ``nn.Linear`` modules directly followed (possibly through a LayerNorm) by ``kinds``."""
    mods = list(head.modules())[1:] if not isinstance(head, nn.Sequential) else list(head)
    found = []
    for i, m in enumerate(mods):
        if isinstance(m, kinds):
            for prev in reversed(mods[:i]):
                if isinstance(prev, nn.Linear):
                    found.append(prev)
                    break
                if not isinstance(prev, nn.LayerNorm):
                    break
    return found


def _score_head(model: nn.Module) -> nn.Module:
    head = getattr(model, "score_head", None)
    if not isinstance(head, nn.Module):
        raise TypeError(
            f"this fault edits the score head, but {type(model).__name__} has no 'score_head' "
            "module; inject it into gatrank's GATRanker (--model gat)"
        )
    return head


@torch.no_grad()
def _dead_relu(model: nn.Module) -> nn.Module:
    for lin in _linears_before(_score_head(model), (nn.ReLU,)):
        lin.bias.fill_(-100.0)  # every pre-activation far below 0: the ReLU never fires
    return model


@torch.no_grad()
def _saturate(model: nn.Module) -> nn.Module:
    for lin in _linears_before(_score_head(model), (nn.Sigmoid, nn.Tanh)):
        lin.weight.mul_(100.0)
        lin.bias.fill_(20.0)  # sigmoid(20 + large) == 1.0 in float32
    return model


@torch.no_grad()
def _huge_init(model: nn.Module) -> nn.Module:
    for p in model.parameters():
        p.mul_(20.0)
    return model


def _freeze(model: nn.Module) -> nn.Module:
    params = list(model.named_parameters())
    for _, p in params:
        p.requires_grad_(False)
    # One trainable tensor so an optimizer can be built: the last bias, which a pairwise loss
    # cannot move (adding a constant to every score changes no pair).
    params[-1][1].requires_grad_(True)
    return model


# --------------------------------------------------------------------------- loss faults


def _base_loss(base: str | UserLoss | None, config: Config) -> Callable[[Tensor, Tensor], Tensor]:
    if base is None or base == "":
        lc = config.loss

        def builtin(scores: Tensor, targets: Tensor) -> Tensor:
            return pairwise_rank_loss(scores, targets, margin_eps=lc.margin_eps,
                                      tie_eps=lc.tie_eps, temperature=lc.temperature,
                                      weight_by_diff=lc.weight_by_diff).loss

        return builtin
    user = load_object(base, what="loss") if isinstance(base, str) else base

    def as_tensor(scores: Tensor, targets: Tensor) -> Tensor:
        out = user(scores, targets)
        return out.loss if isinstance(out, LossOutput) else out

    return as_tensor


def _detached_loss(base, config: Config) -> UserLoss:
    inner = _base_loss(base, config)

    def detached_loss(scores: Tensor, targets: Tensor) -> Tensor:
        # The classic bug: the value survives (logging looks fine), the graph does not.
        return inner(scores, targets).detach().requires_grad_()

    return detached_loss


def _reversed_loss(base, config: Config) -> UserLoss:
    inner = _base_loss(base, config)

    def reversed_loss(scores: Tensor, targets: Tensor) -> Tensor:
        return inner(-scores, targets)  # the sign of (s_i - s_j) flipped

    return reversed_loss


# --------------------------------------------------------------------------- the zoo


_BUGGY = "gatrank.doctor.buggy"
"""The user models and losses of the zoo, by import string (as a user names theirs)."""


def _tie_eps_over_spread(cfg: Config, gs) -> Config:
    y = gs.table["y"].to_numpy(dtype=np.float64)
    return cfg.updated({"loss.tie_eps": float(2 * np.ptp(y) + 1.0)})


_ZOO = [
    Fault("nan_features", "nan_or_inf_inputs",
          "a NaN in the node features of every 8th graph", "data", data=_nan_features),
    Fault("empty_graphs", "empty_graphs",
          "every 8th graph loses all its edges", "data", data=_empty_graphs),
    Fault("constant_targets", "constant_targets",
          "every target set to the median", "data", data=_constant_targets),
    Fault("tie_eps_too_large", "no_valid_pairs",
          "loss.tie_eps set above the target spread, so every pair is a tie", "config",
          config=_tie_eps_over_spread),
    Fault("singleton_groups", "no_valid_pairs",
          "every graph in its own group (query) and batch_size 2", "data",
          data=_singleton_groups,
          config=lambda c, gs: c.updated({"training.batch_size": 2})),
    Fault("identical_features", "uninformative_features",
          "every node of every graph gets the same feature vector", "data",
          data=_identical_features),
    Fault("raw_unit_targets", "unscaled_targets",
          "targets in raw units, IC50 in nM (y -> 10 ** (9 - y): spread in the thousands), "
          "under a plain MSE user loss", "data", also=("exploding_gradients",),
          data=_raw_units, user_loss=f"{_BUGGY}:mse_loss", evidence=("mse_loss",)),
    Fault("detached_loss", "loss_detached",
          "the loss is returned as loss.detach().requires_grad_()", "loss", loss=_detached_loss),
    Fault("reversed_loss", "loss_wrong_direction",
          "the loss sees -scores: it rewards the reversed order", "loss", loss=_reversed_loss),
    Fault("broadcast_mse_loss", "score_shape_mismatch",
          "a user MSE loss of scores.view(-1, 1) against [G] targets: a [G, G] broadcast "
          "blind to which score goes with which target", "loss",
          user_loss=f"{_BUGGY}:broadcast_mse_loss", evidence=("broadcast_mse_loss",)),
    Fault("pool_without_batch", "score_shape_mismatch",
          "a user GCN that pools with global_mean_pool(x, None): one score per batch",
          "model", model=f"{_BUGGY}:PoolWithoutBatch", evidence=("PoolWithoutBatch", "[1]")),
    Fault("node_scores", "score_shape_mismatch",
          "a user GCN without a readout: one score per node", "model",
          model=f"{_BUGGY}:NodeScorer", evidence=("NodeScorer",)),
    Fault("raises_on_large_graphs", "user_code_error",
          "a user model whose nn.Embedding of node positions has 32 rows: IndexError on "
          "molecules with more than 32 atoms", "model", model=f"{_BUGGY}:PositionalGNN",
          evidence=("IndexError", "buggy.py")),
    Fault("zero_init", "bad_initialization",
          "a user GCN with nn.init.zeros_ on every weight (\"deterministic init\")", "model",
          also=("constant_output_layer",), model=f"{_BUGGY}:ZeroInitGNN",
          evidence=("conv1.lin.weight",)),
    Fault("frozen_parameters", "frozen_parameters",
          "requires_grad=False on every parameter except the last bias", "model",
          model_edit=_freeze),
    Fault("huge_temperature", "vanishing_gradients",
          "loss.temperature 1e4: score gaps are divided by 10,000", "config",
          config=lambda c, gs: c.updated({"loss.temperature": 1e4})),
    Fault("exploding_init", "exploding_gradients",
          "every weight initialised 20x too large, no LayerNorm, no gradient clipping", "model",
          config=lambda c, gs: c.updated({"model.head": "plain", "training.grad_clip": 0.0}),
          model_edit=_huge_init),
    Fault("lr_too_high", "learning_rate_too_high",
          "training.learning_rate 10", "config",
          config=lambda c, gs: c.updated({"training.learning_rate": 10.0})),
    Fault("lr_too_low", "learning_rate_too_low",
          "training.learning_rate 1e-7", "config",
          config=lambda c, gs: c.updated({"training.learning_rate": 1e-7})),
    Fault("dead_relu_head", "dead_activations",
          "score head without LayerNorm whose ReLU input has bias -100", "model",
          also=("vanishing_gradients",),
          config=lambda c, gs: c.updated({"model.head": "plain"}), model_edit=_dead_relu),
    Fault("layernorm_one_head", "constant_output_layer",
          "a user GCN whose score head ends Linear(h, 1) -> LayerNorm(1): every score 0",
          "model", model=f"{_BUGGY}:LayerNormScoreHead", evidence=("head.3", "LayerNorm")),
    Fault("softmax_one_unit", "constant_output_layer",
          "a user GAT whose forward ends softmax(lin_out(h), dim=-1) on one unit: every "
          "score 1.0", "model", model=f"{_BUGGY}:SoftmaxScoreGNN", evidence=("lin_out",)),
    Fault("relu_after_offset", "dead_activations",
          "a user GCN whose forward ends torch.relu(lin_out(h) - 1000): every score 0, and "
          "no module of the model is dead", "model", also=("vanishing_gradients",),
          model=f"{_BUGGY}:OffsetReluHead", evidence=("torch.relu", "buggy.py", "lin_out")),
    Fault("deep_gat_no_residual", "oversmoothing",
          "32 GAT layers (width 8, one head) without residual connections", "config",
          also=("vanishing_gradients",),
          config=lambda c, gs: c.updated({"model.num_layers": 32, "model.residual": False,
                                          "model.hidden_dim": 8, "model.heads": 1})),
    Fault("saturated_sigmoid_head", "score_head_saturated",
          "sigmoid output whose input is scaled by 100 and shifted by +20", "model",
          also=("vanishing_gradients",),
          config=lambda c, gs: c.updated({"model.head": "sigmoid"}), model_edit=_saturate),
    Fault("heavy_regularization", "over_regularized",
          "dropout 0.9 and weight decay 1.0", "config",
          config=lambda c, gs: c.updated({"model.dropout": 0.9, "training.weight_decay": 1.0})),
    Fault("shuffled_labels", "no_signal",
          "targets permuted across graphs: nothing links a graph to its target", "data",
          data=_shuffled_labels, graphs=256),
]

FAULTS: dict[str, Fault] = {f.name: f for f in _ZOO}
"""Every fault by name, in the order of the doctor's stages (data, loss, model, training)."""


def list_faults() -> list[dict[str, str]]:
    """``[{"name", "cause", "where", "description", "user_code"}]`` for every fault;
    ``user_code``: the user model and loss it puts in place (import strings), or ``""``."""
    return [{"name": f.name, "cause": f.cause, "where": f.where, "description": f.description,
             "user_code": " ".join(x for x in (f.model, f.user_loss) if x)} for f in _ZOO]


def get_fault(name: str) -> Fault:
    """The fault called ``name``; ValueError listing the known names otherwise."""
    try:
        return FAULTS[name]
    except KeyError:
        raise ValueError(f"unknown fault {name!r}; known faults: {', '.join(FAULTS)}") from None


def inject(name: str | Fault, graphs, config: Config, loss: str | UserLoss | None = None,
           *, seed: int = 0) -> Injected:
    """Apply a fault to a setup.

    Args:
        name: a fault name (see :data:`FAULTS`) or a :class:`Fault`.
        graphs: a :class:`gatrank.data.GraphSet`; never modified (data faults copy).
        config: the run's config.
        loss: the user's loss (import string or callable; None for gatrank's).
        seed: seeds data faults (which rows break, how labels shuffle).

    Returns:
        :class:`Injected` with the edited graphs, config, a model edit for every fresh model,
        the loss to use (the fault's user loss replaces ``loss``) and the fault's user model.
    """
    fault = name if isinstance(name, Fault) else get_fault(name)
    if fault.data is not None:
        graphs = fault.data(graphs, seed)
    if fault.config is not None:
        config = fault.config(config, graphs)
    if fault.user_loss is not None:
        loss = fault.user_loss
    elif fault.loss is not None:
        loss = fault.loss(loss or None, config)
    logger.info("injected fault %s: %s", fault.name, fault.description)
    return Injected(graphs=graphs, config=config, model_edit=fault.model_edit, loss=loss,
                    fault=fault, model=fault.model)
