"""The doctor's training runs: the model of a run (the user's, edited by a fault, or a
reference) and one run of gatrank's training loop, stopped as soon as its answer is clear."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from gatrank.checks.probes import ModelProbe
from gatrank.config import Config
from gatrank.doctor.optimum import LossOptimum, loss_optimum
from gatrank.doctor.state import Diagnosis
from gatrank.doctor.symptoms import Run, plateau
from gatrank.losses import make_loss_fn
from gatrank.model import adapt_forward, build_model
from gatrank.training import NonFiniteError, train

__all__ = [
    "model_factory",
    "train_run",
]

logger = logging.getLogger(__name__)


def model_factory(doc: Diagnosis,
                  model: str | None = None) -> Callable[[int, Config], nn.Module]:
    """``(in_channels, cfg) -> module``: a fresh copy of the user's model (with the fault's edit),
    or the reference model named ``model`` (``gat``, ``linear``) unedited."""
    spec = doc.model if model is None else model
    edit = doc.model_edit if model is None else None

    def make(in_channels: int, cfg: Config) -> nn.Module:
        if isinstance(spec, nn.Module):
            net = copy.deepcopy(spec)
        else:  # an import string, a class or a factory: their constructor arguments filled in
            net = build_model(in_channels, cfg.model, spec or "", edge_dim=doc.gs.edge_dim)
        return adapt_forward(edit(net) if edit is not None else net)

    return make


def train_run(doc: Diagnosis, name: str, cfg: Config, idx: Sequence[int], *, stop_on_pass: bool,
              model: str | None = None, keep: list[nn.Module] | None = None,
              patient: bool = False, probe: bool = True, stall: int | None = None) -> Run:
    """Train on ``idx`` with ``cfg``; stops once the criteria pass or the loss stalls.
    ``model`` names a reference model in place of the user's (see :func:`model_factory`).
    The trained model is appended to ``keep`` when given. ``patient``: a stalled loss stops the
    run only while a red flag stands (a run that learns slowly gets the whole budget, as the
    runbook's overfit test does). ``stall``: the plateau window in epochs (default
    ``doc.opts.stall_epochs``). ``probe``: measure the model at every logged epoch
    (:class:`~gatrank.checks.probes.ModelProbe`, which the symptoms read; a verification run
    only needs the verdict). The criteria are read with the run's scale checks against the
    loss's optimum on these graphs' targets (:mod:`~gatrank.doctor.optimum`)."""
    out = Run(name, [], optimum=_optimum(doc, cfg, idx))
    stall = doc.opts.stall_epochs if stall is None else stall

    def stop_when(records: Sequence[dict[str, Any]]) -> str | None:
        out.history = list(records)
        if len(records) < 2:
            return None
        if stop_on_pass and out.passed:
            return "criteria met"
        if patient and out.learns:
            return None
        if plateau(records, stall, out.optimum.loss_min if out.optimum else None):
            return (f"plateaued: neither the loss (1% of its way to the loss's optimum) nor "
                    f"the pairwise accuracy (0.01) improved in the {stall} epochs before epoch "
                    f"{records[-1]['epoch']}" + (", a red flag standing" if patient else ""))
        return None

    make = model_factory(doc, model)

    def build(in_channels: int) -> nn.Module:
        net = make(in_channels, cfg)
        if keep is not None:
            keep.append(net)
        return net

    t0 = time.perf_counter()
    try:
        res = train(cfg, graphs=doc.gs, model=build, loss=doc.loss or None,
                    progress=False, splits={"train": list(idx), "val": [], "test": []},
                    probes=[ModelProbe(doc.opts.probe_graphs)] if probe else [],
                    stop_when=stop_when)
    except NonFiniteError as exc:
        out.nonfinite = True
        out.error = str(exc).split("; stopped")[0]
    else:
        out.history = list(res.history)
        out.stopped = res.summary.get("stop_reason") or ""
        out.dropout_off = list(res.summary.get("dropout_off") or [])
    out.seconds = time.perf_counter() - t0
    logger.info("doctor: %s run: %s", name, out.summary())
    return out


def _optimum(doc: Diagnosis, cfg: Config, idx: Sequence[int]) -> LossOptimum | None:
    """The loss's optimum on the targets of the graphs ``idx`` taken as one batch (the overfit
    test's full batch), with their groups when they have them."""
    if doc.gs is None or len(idx) < 2:
        return None
    graphs = [doc.gs[i] for i in idx]
    y = torch.cat([g.y.reshape(-1)[:1] for g in graphs]).float()
    group = None
    if all("group" in g for g in graphs):
        group = torch.cat([g.group.reshape(-1)[:1] for g in graphs])
        if bool((group < 0).all()):
            group = None
    return loss_optimum(make_loss_fn(doc.loss or None, cfg), y, group)
