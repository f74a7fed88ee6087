"""Each cause's fix as data, derived from the cause's measurements and the run's settings.

A :class:`Fix` is a config change (keys and values), a data change (a named transform of the
graphs), a model edit or swap (a module the signal trace blames replaced by an identity, a
call in the model's code it blames made the identity, weights re-initialised or unfrozen, and
as the last resort gatrank's GATRanker in place of the user's model), a change
only a human can make (a detached or reversed loss, a shape bug in the user's code), which says
why and is never "verified", or another cause's consequence. :func:`fix_for` gives a cause's
fix, :func:`fixes_for` the ones to try; :mod:`gatrank.doctor.verify` applies and verifies them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from gatrank.checks.static import check_graphs
from gatrank.config import Config
from gatrank.doctor.ablations import _setting
from gatrank.doctor.report import Cause
from gatrank.doctor.state import Diagnosis
from gatrank.doctor.symptoms import _FLATTENING

__all__ = [
    "MAX_VERIFIED",
    "MAX_RUNS",
    "Fix",
    "fix_for",
    "fixes_for",
]

MAX_VERIFIED = 3
"""Causes whose fixes are verified, most likely first."""
MAX_RUNS = 3
"""New training runs verification may add: at most three short overfit runs (a fix an
ablation already ran costs none)."""

_REMOVABLE = (nn.LayerNorm, nn.BatchNorm1d, nn.InstanceNorm1d, nn.GroupNorm, nn.Softmax,
              nn.LogSoftmax, nn.Sigmoid, nn.Tanh, nn.ReLU, nn.Hardtanh, nn.Softmin)
"""Modules the signal trace may blame that an identity replaces without changing any shape:
normalizations and element-wise or last-dimension activations."""


@dataclass(frozen=True)
class Fix:
    """One cause's fix, as what a run changes."""

    kind: str
    """``config``, ``data``, ``model``, ``human`` or ``consequence`` (the cause follows from
    another one: fixing that one is the fix)."""
    label: str
    """The change, in words (``loss.temperature 10000 -> 1``)."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Config keys (``section.key``) and their new values."""
    data: str = ""
    """A data transform: ``drop_rows``, ``standardize_y``, ``degree_features`` or ``ungroup``."""
    rows: tuple[int, ...] = ()
    """``drop_rows``: the positions of the graphs to leave out."""
    edit: str = ""
    """A model edit: ``identity:<module path>``, ``identity_call:<op>@<file>:<line>`` (one
    torch call in the model's code made the identity), ``reinit`` or ``unfreeze``."""
    model: str = ""
    """A reference model in place of the user's: ``gat`` (gatrank's GATRanker)."""
    base: str = "overfit"
    """Which run the fix is verified on: ``overfit`` (the runbook's overfit test) or
    ``your settings`` (the user's own training settings on the same graphs)."""
    human: str = ""
    """Why only a human can apply it (``kind == "human"``)."""
    detail: dict[str, Any] = field(default_factory=dict)
    """What the change needs to be made again outside the doctor: ``ids`` of the rows left
    out, ``y_mean``/``y_std`` of a standardization, ``max_degree`` of degree features,
    ``op``/``file``/``line``/``code`` of a call made the identity."""

    @property
    def applicable(self) -> bool:
        """Whether the doctor can apply it (not a human's change, not another cause's)."""
        return self.kind not in ("human", "consequence")

    def key(self) -> tuple:
        """What a run with this fix changes: two fixes with the same key make the same run."""
        return (self.base, tuple(sorted(self.overrides.items())), self.data, self.rows,
                self.edit, self.model)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "label": self.label, "base": self.base}
        if self.overrides:
            d["config"] = dict(self.overrides)
        if self.data:
            d["data"] = self.data
        if self.rows:
            d["rows"] = list(self.rows)
        if self.edit:
            d["edit"] = self.edit
        if self.model:
            d["model"] = self.model
        if self.human:
            d["human"] = self.human
        if self.detail:
            d["detail"] = dict(self.detail)
        return d


def _config_fix(cfg: Config, overrides: dict[str, Any], base: str = "overfit") -> Fix:
    label = ", ".join(f"{k} {_setting(cfg, k)!r} -> {v!r}" for k, v in overrides.items())
    return Fix("config", label, dict(overrides), base=base)


def _human(why: str) -> Fix:
    return Fix("human", why, human=why)


_HUMAN = {
    "constant_targets": "the targets themselves do not vary: only you know which column "
                        "holds the values to rank by",
    "loss_detached": "the loss's own code breaks the gradient path (a .detach(), .item() or "
                     "torch.tensor(...)): edit the loss",
    "loss_wrong_direction": "the loss's own code rewards the reversed order: fix the sign in "
                            "the loss",
    "score_shape_mismatch": "the model's or loss's own code gives scores that are not one per "
                            "graph: fix the readout (pool with batch) or the loss's shapes",
    "user_code_error": "your code raised: fix the line named in the evidence",
    "no_signal": "nothing the model can learn links these graphs to their targets: check the "
                 "rows' targets belong to their graphs",
    "does_not_generalize": "the model memorizes but does not generalize: more or more varied "
                           "training data, or stronger regularization, chosen on validation",
    "invalid_data": "the manifest or dataset itself is invalid: gatrank check-data lists each "
                    "problem and its fix",
}


def fix_for(doc: Diagnosis, cause: Cause) -> Fix:
    """The fix of ``cause`` as data, from the cause's measurements and the run's settings."""
    cid = cause.id
    base = "your settings" if cause.stage == "your settings" else "overfit"
    if cid in _HUMAN:
        return _human(_HUMAN[cid])
    flattening = [c for c in _FLATTENING if c in doc.causes and c != cid]
    if cid == "vanishing_gradients" and flattening:
        return Fix("consequence", f"fix {flattening[0]} first", human=f"a consequence of "
                   f"{flattening[0]}, which flattens the scores and with them the gradients")
    change = cause.measured.get("ablation_change")
    if change:  # an ablation confirmed the cause: its change is the fix, and its run the proof
        if change["model"]:
            return Fix("model", f"{change['model']} in place of your model",
                       dict(change["config"]), model=change["model"], base=base)
        return _config_fix(_run_cfg(doc, base), change["config"], base)
    for make in (_data_fix, _model_fix, _settings_fix):
        fix = make(doc, cause, base)
        if fix is not None:
            return fix
    return _human(f"no mechanical fix is known for {cid}")


def _run_cfg(doc: Diagnosis, base: str) -> Config:
    return doc.user_cfg() if base == "your settings" else doc.overfit_cfg()


def _data_fix(doc: Diagnosis, cause: Cause, base: str) -> Fix | None:
    """The fix that changes the data: rows left out, targets standardized, degree features,
    no groups."""
    cid = cause.id
    if cid in ("nan_or_inf_inputs", "empty_graphs"):
        rows = _bad_rows(doc)
        if not rows:
            return _human("the graphs with problems could not be loaded: fix or drop the "
                          "rows gatrank check-data lists")
        ids = doc.gs.table["id"].astype(str).iloc[rows].tolist() if "id" in doc.gs.table else []
        return Fix("data", f"leave out the {len(rows)} graphs with problems", data="drop_rows",
                   rows=tuple(rows), detail={"ids": ids}, base=base)
    if cid == "unscaled_targets" or (cid == "exploding_gradients"
                                     and "unscaled_targets" in doc.causes):
        y = doc.gs.table["y"].to_numpy(dtype=np.float64)[doc.train_split()]
        mean, std = float(y.mean()), float(y.std()) or 1.0
        return Fix("data", f"standardize y: (y - {mean:.4g}) / {std:.4g}, the training graphs' "
                   "mean and std", data="standardize_y", detail={"y_mean": mean, "y_std": std},
                   base=base)
    if cid == "uninformative_features":
        top = _max_degree(doc.gs)
        return Fix("data", f"one-hot node degree (0 to {top}) appended to the node features",
                   data="degree_features", detail={"max_degree": top}, base=base)
    if cid == "no_valid_pairs":
        cfg = doc.cfg
        if cfg.loss.tie_eps > 1e-6 or cfg.loss.margin_eps > 0:
            return _config_fix(cfg, {"loss.tie_eps": 1e-6, "loss.margin_eps": 0.0}, base)
        if doc.gs is not None and "group" in doc.gs.table:
            return Fix("data", "drop the group column: rank all graphs against each other",
                       data="ungroup", base=base)
        return _human("too few graphs per batch or group to form a pair")
    return None


def _model_fix(doc: Diagnosis, cause: Cause, base: str) -> Fix | None:
    """The fix that edits the model: unfreeze, re-initialise, the blamed module replaced by an
    identity, the blamed call in the model's code made the identity, a bounded head swapped,
    and as the last resort gatrank's GATRanker in place of the user's model."""
    cid, mc = cause.id, doc.cfg.model
    culprit = cause.measured.get("culprit") or {}
    if cid == "frozen_parameters":
        return Fix("model", "set requires_grad=True on every parameter", edit="unfreeze",
                   base=base)
    if cid == "bad_initialization":
        return Fix("model", "re-initialise every layer with its default (reset_parameters)",
                   edit="reinit", base=base)
    flattening = ("constant_output_layer", "dead_activations", "score_head_saturated")
    if cid in flattening and culprit.get("where") == "module" \
            and _removable(doc, culprit.get("path", "")):
        return Fix("model", f"replace {culprit['path']} ({culprit.get('type', '')}) by an "
                   "identity", edit=f"identity:{culprit['path']}", base=base)
    if cid in flattening and culprit.get("where") == "forward" and culprit.get("op") \
            and culprit.get("file") and culprit.get("line"):
        # the one call in the model's code that the trace saw make every graph the same
        op, file, line = culprit["op"], culprit["file"], culprit["line"]
        return Fix("model", f"make {op} at {culprit.get('site') or f'{file}:{line}'} the "
                   "identity (remove that call)", edit=f"identity_call:{op}@{file}:{line}",
                   detail={"op": op, "file": file, "line": line,
                           "code": culprit.get("code", "")}, base=base)
    if cid in ("score_head_saturated", "dead_activations") and doc.builtin \
            and mc.head != "layernorm":
        return _config_fix(doc.cfg, {"model.head": "layernorm"}, base)
    if cid in (*flattening, "insufficient_capacity"):
        if not doc.builtin:
            return _gat_swap(base)
        return _human("the layer the signal trace names has no shape-preserving replacement")
    return None


def _gat_swap(base: str) -> Fix:
    """The last resort for a user model at fault: gatrank's GATRanker in its place."""
    return Fix("model", "last resort: gatrank's GATRanker in place of your model", model="gat",
               base=base)


def _settings_fix(doc: Diagnosis, cause: Cause, base: str) -> Fix | None:
    """The fix that changes a setting: loss temperature, residuals, stabilizers, the default
    depth, the learning rate, regularization."""
    cid, cfg, mc = cause.id, doc.cfg, doc.cfg.model
    run_cfg = _run_cfg(doc, base)
    if cid == "vanishing_gradients":
        if cfg.loss.temperature > 10:
            return _config_fix(cfg, {"loss.temperature": 1.0}, base)
        if doc.builtin and not mc.residual:
            return _config_fix(cfg, {"model.residual": True}, base)
        return _human("no setting switched off explains the small gradients")
    if cid == "exploding_gradients":
        changes: dict[str, Any] = {}
        if cfg.training.grad_clip <= 0:
            changes["training.grad_clip"] = 1.0
        if doc.builtin and mc.head != "layernorm":
            changes["model.head"] = "layernorm"
        if changes:
            return _config_fix(cfg, changes, base)
        return _config_fix(run_cfg, {"training.learning_rate":
                                     run_cfg.training.learning_rate / 10}, base)
    if cid == "oversmoothing" and doc.builtin:
        d = type(mc)()
        return _config_fix(cfg, {"model.num_layers": d.num_layers, "model.residual": True,
                                 "model.hidden_dim": max(mc.hidden_dim, d.hidden_dim),
                                 "model.heads": d.heads}, base)
    if cid in ("learning_rate_too_high", "learning_rate_too_low"):
        if base == "your settings":
            target = doc.overfit_cfg().training.learning_rate
        else:
            lr = run_cfg.training.learning_rate
            target = lr / 10 if cid == "learning_rate_too_high" else lr * 10
        return _config_fix(run_cfg, {"training.learning_rate": target}, base)
    if cid == "over_regularized":
        return _config_fix(cfg, {"model.dropout": 0.0, "training.weight_decay": 0.0}, base)
    return None


def fixes_for(doc: Diagnosis, cause: Cause) -> list[Fix]:
    """The fixes of ``cause`` to try, each alone, the most direct first: :func:`fix_for`; for
    gradients that explode before any update, re-initialising the weights (what the
    stabilizers only contain); for a user model whose blamed module or call was removed, the
    last resort of gatrank's GATRanker in its place."""
    first = fix_for(doc, cause)
    out = [first]
    if first.edit.startswith(("identity:", "identity_call:")) and not doc.builtin:
        out.append(_gat_swap(first.base))
    if (cause.id == "exploding_gradients" and "grad_norm_at_init" in cause.measured
            and first.kind == "config"):
        out.append(Fix("model", "re-initialise every layer with its default "
                       "(reset_parameters)", edit="reinit", base=first.base))
    return out


def _max_degree(gs) -> int:
    from torch_geometric.utils import degree

    return max((int(degree(g.edge_index[1], g.num_nodes).max()) if g.num_edges else 0)
               for g in gs.graphs)


def _removable(doc: Diagnosis, path: str) -> bool:
    """Whether the module at ``path`` of the user's model is one an identity can replace."""
    if not path:
        return False
    try:
        net = _build(doc)
        return isinstance(net.get_submodule(path), _REMOVABLE)
    except Exception:  # the user's code, or a path the trace named in a wrapper
        return False


def _build(doc: Diagnosis) -> nn.Module:
    from gatrank.doctor.runs import model_factory

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(doc.cfg.training.seed)
        net = model_factory(doc)(doc.gs.num_features, doc.cfg)
    return getattr(net, "module", net)


def _bad_rows(doc: Diagnosis) -> list[int]:
    """Positions of the graphs in ``doc.gs`` with an error (NaN/Inf, no nodes or edges)."""
    if doc.gs is None:
        return []
    return [i for i, g in enumerate(doc.gs.graphs)
            if any(not p.is_warning for p in check_graphs([g]))]
