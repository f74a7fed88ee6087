"""The doctor's training runs: the model of a run (the user's, edited by a fault, or a
reference) and one run of gatrank's training loop, stopped as soon as its answer is clear."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from gatrank.checks.probes import ModelProbe
from gatrank.checks.verdict import evaluate_verdict
from gatrank.config import Config
from gatrank.doctor.state import Diagnosis
from gatrank.doctor.symptoms import Run, plateau
from gatrank.model import adapt_forward, build_model
from gatrank.training import NonFiniteError, train

__all__ = [
    "model_factory",
    "train_run",
]

logger = logging.getLogger(__name__)


class _Stop(Exception):
    """Raised from a training callback to end a run whose answer is clear."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def model_factory(doc: Diagnosis,
                  model: str | None = None) -> Callable[[int, Config], nn.Module]:
    """``(in_channels, cfg) -> module``: a fresh copy of the user's model (with the fault's edit),
    or the reference model named ``model`` (``gat``, ``linear``) unedited."""
    spec = doc.model if model is None else model
    edit = doc.model_edit if model is None else None

    def make(in_channels: int, cfg: Config) -> nn.Module:
        if isinstance(spec, nn.Module):
            net = copy.deepcopy(spec)
        elif callable(spec):
            net = spec(in_channels)
        else:
            net = build_model(in_channels, cfg.model, spec or "", edge_dim=doc.gs.edge_dim)
        return adapt_forward(edit(net) if edit is not None else net)

    return make


def train_run(doc: Diagnosis, name: str, cfg: Config, idx: Sequence[int], *, stop_on_pass: bool,
              model: str | None = None, keep: list[nn.Module] | None = None,
              patient: bool = False, probe: bool = True) -> Run:
    """Train on ``idx`` with ``cfg``; stops once the criteria pass or the loss stalls.
    ``model`` names a reference model in place of the user's (see :func:`model_factory`).
    The trained model is appended to ``keep`` when given. ``patient``: a stalled loss stops the
    run only while a red flag stands (a run that learns slowly gets the whole budget, as the
    runbook's overfit test does). ``probe``: measure the model at every logged epoch
    (:class:`~gatrank.checks.probes.ModelProbe`, which the symptoms read; a verification run
    only needs the verdict)."""
    records: list[dict[str, Any]] = []
    stall = doc.opts.stall_epochs

    def watch(rec: dict[str, Any]) -> None:
        records.append(rec)
        verdict = evaluate_verdict(records) if len(records) > 1 else None
        if stop_on_pass and verdict is not None and verdict.passed:
            raise _Stop("criteria met")
        if patient and verdict is not None and not verdict.red_flags:
            return
        if plateau(records, stall):
            raise _Stop(f"loss plateaued: no 1% improvement in the {stall} epochs "
                        f"before epoch {rec['epoch']}")

    make = model_factory(doc, model)

    def build(in_channels: int) -> nn.Module:
        net = make(in_channels, cfg)
        if keep is not None:
            keep.append(net)
        return net

    out = Run(name, records)
    t0 = time.perf_counter()
    try:
        train(cfg, graphs=doc.gs, model=build, loss=doc.loss or None,
              progress=False, splits={"train": list(idx), "val": [], "test": []},
              callbacks=[watch], probes=[ModelProbe(doc.opts.probe_graphs)] if probe else [])
    except _Stop as stop:
        out.stopped = stop.reason
    except NonFiniteError as exc:
        out.nonfinite = True
        out.error = str(exc).split("; stopped")[0]
    out.seconds = time.perf_counter() - t0
    logger.info("doctor: %s run: %s", name, out.summary())
    return out
