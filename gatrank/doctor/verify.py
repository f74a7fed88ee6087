"""Verification of the doctor's fixes: each top cause's fix (:mod:`gatrank.doctor.fixes`)
applied alone, and the runbook's overfit test re-run with it, on the same graphs with the same
seed and budget as the doctor's own overfit stage (or the user's settings, for a cause found
there); a run that still learns gets the whole budget, one whose red flags stand stops when
its loss plateaus. Each verified cause gets ``cause.verification``:

``{"status": "verified" | "not_enough" | "human" | "consequence" | "not_applicable", "fix":
Fix.to_dict(), "passed", "epoch", "epochs_run", "pairwise_accuracy", "spearman", "score_std",
"problem", "seconds", "reused"}``

and a fix text that starts with what was measured. A run that an ablation already made with
the same change is reused, not repeated; at most :data:`~gatrank.doctor.fixes.MAX_RUNS` new
runs in all.
"""

from __future__ import annotations

import copy
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from gatrank.doctor.fixes import MAX_RUNS, MAX_VERIFIED, Fix, fixes_for
from gatrank.doctor.report import Cause
from gatrank.doctor.runs import train_run
from gatrank.doctor.state import Diagnosis
from gatrank.doctor.symptoms import Run
from gatrank.doctor.trace import call_site, during_forward, op_name

__all__ = [
    "verify_fixes",
    "apply_data_fix",
    "model_edit",
    "parse_identity_call",
    "IdentityCall",
]


def model_edit(spec: str) -> Callable[[nn.Module], nn.Module]:
    """The model edit ``spec`` names, as a function applied to every freshly built model.

    ``identity:<module path>`` replaces that module by ``nn.Identity``;
    ``identity_call:<op>@<file>:<line>`` makes one torch call in the model's code the identity
    (:class:`IdentityCall`); ``reinit`` re-initialises every layer; ``unfreeze`` makes every
    parameter trainable.

    Raises:
        ValueError: an unknown edit, or an ``identity_call`` without ``@file:line``.
    """
    if spec.startswith("identity_call:"):
        op, file, line = parse_identity_call(spec)

        def identity_call(net: nn.Module) -> nn.Module:
            # hooks on the model itself: the call is the identity in every forward pass, and
            # gradients flow through the argument it passes on
            during_forward(getattr(net, "module", net), IdentityCall(op, file, line))
            return net

        return identity_call
    if spec.startswith("identity:"):
        path = spec.split(":", 1)[1]

        def identity(net: nn.Module) -> nn.Module:
            inner = getattr(net, "module", net)
            parent, _, name = path.rpartition(".")
            setattr(inner.get_submodule(parent) if parent else inner, name, nn.Identity())
            return net

        return identity
    if spec == "reinit":
        def reinit(net: nn.Module) -> nn.Module:
            for m in net.modules():
                if m is not net and callable(getattr(m, "reset_parameters", None)):
                    m.reset_parameters()
            return net

        return reinit
    if spec == "unfreeze":
        def unfreeze(net: nn.Module) -> nn.Module:
            for p in net.parameters():
                p.requires_grad_(True)
            return net

        return unfreeze
    raise ValueError(f"unknown model edit {spec!r}")


def parse_identity_call(spec: str) -> tuple[str, str, int]:
    """``identity_call:torch.relu@/path/model.py:31`` -> ``("torch.relu", "/path/model.py",
    31)``."""
    op, at, where = spec.removeprefix("identity_call:").partition("@")
    file, _, line = where.rpartition(":")
    if not (op and at and file and line.isdigit()):
        raise ValueError(f"bad model edit {spec!r}: write identity_call:<op>@<file>:<line>, "
                         "e.g. identity_call:torch.relu@/path/model.py:31")
    return op, file, int(line)


class IdentityCall(TorchFunctionMode):
    """While active, the torch function ``op`` (named as :func:`~gatrank.doctor.trace.op_name`
    names it) called from line ``line`` of ``file`` returns its first tensor argument
    unchanged; every other call, and the same function on any other line, runs as it is."""

    def __init__(self, op: str, file: str, line: int) -> None:
        super().__init__()
        self.op, self.file, self.line = op, file, line
        self.name = op.rsplit(".", 1)[-1]  # a suffix of the bound name: special_expit
        self.real = os.path.realpath(file)

    def _here(self, frame) -> bool:
        site = call_site(frame)
        return site is not None and site[1] == self.line and (
            site[0] == self.file or os.path.realpath(site[0]) == self.real)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        # the name first: it rules out almost every call without looking at a frame
        if str(getattr(func, "__name__", "")).endswith(self.name) and op_name(func) == self.op \
                and self._here(sys._getframe(1)):
            first = next((v for v in (*args, *kwargs.values()) if isinstance(v, Tensor)), None)
            if first is not None:
                return first
        return func(*args, **kwargs)


def _then(first: Callable[[nn.Module], nn.Module] | None,
          second: Callable[[nn.Module], nn.Module]) -> Callable[[nn.Module], nn.Module]:
    if first is None:
        return second
    return lambda net: second(first(net))


def apply_data_fix(gs, fix: Fix):
    """``gs`` with the data change of ``fix`` (never modified; graphs are shallow copies);
    ``drop_rows`` leaves ``gs`` as it is (the run leaves the rows out of its graphs)."""
    from gatrank.doctor.faults import _set_targets, _with_graphs

    if fix.data == "drop_rows":
        return gs  # the rows are left out of the run's graph indices instead
    if fix.data == "standardize_y":
        y = gs.table["y"].to_numpy(dtype=np.float64)
        return _set_targets(gs, (y - fix.detail["y_mean"]) / fix.detail["y_std"])
    if fix.data == "ungroup":
        graphs = []
        for g in gs.graphs:
            g = copy.copy(g)
            if "group" in g:
                del g.group
            graphs.append(g)
        out = _with_graphs(gs, graphs)
        out.table = out.table.drop(columns=["group"], errors="ignore")
        return out
    if fix.data == "degree_features":
        from torch_geometric.utils import degree

        top = fix.detail["max_degree"]
        graphs = []
        for g in gs.graphs:
            g = copy.copy(g)
            deg = degree(g.edge_index[1], g.num_nodes).long().clamp(max=top)
            onehot = torch.nn.functional.one_hot(deg, top + 1).to(g.x.dtype)
            g.x = torch.cat([g.x, onehot], dim=1)
            graphs.append(g)
        out = _with_graphs(gs, graphs)
        out.num_features = gs.num_features + top + 1
        return out
    raise ValueError(f"unknown data fix {fix.data!r}")


def _fixed_run(doc: Diagnosis, fix: Fix, idx: Sequence[int]) -> Run:
    """The run of ``fix``: the doctor's overfit (or your-settings) run on ``idx`` with the fix's
    change applied, stopping once the criteria pass."""
    run_doc = copy.copy(doc)  # shares the causes and stages; only gs / model_edit differ
    if fix.data:
        run_doc.gs = apply_data_fix(doc.gs, fix)
        if fix.data == "drop_rows":
            drop = set(fix.rows)
            idx = [i for i in doc.train_split() if i not in drop][: doc.opts.n]
    if fix.edit:
        run_doc.model_edit = _then(doc.model_edit, model_edit(fix.edit))
    cfg = (doc.user_cfg if fix.base == "your settings" else doc.overfit_cfg)(**fix.overrides)
    return train_run(run_doc, f"fix: {fix.label}", cfg, idx, stop_on_pass=True,
                     model=fix.model or None, patient=True, probe=False)


def _guarded_run(doc: Diagnosis, fix: Fix, idx: Sequence[int]) -> Run:
    """:func:`_fixed_run`; an exception of the user's code (or of a model the edit broke)
    becomes a failed run that says what was raised."""
    try:
        return _fixed_run(doc, fix, idx)
    except Exception as exc:  # the user's model or loss under the fix: a failed verification
        message = " ".join(str(exc).split())[:200]
        return Run(f"fix: {fix.label}", [], error=f"raised {type(exc).__name__}: {message}")


def _verdict_of(run: Run, fix: Fix) -> bool:
    return run.passed or (fix.base == "your settings" and run.learns)


def _record(run: Run, fix: Fix, seconds: float, reused: bool) -> dict[str, Any]:
    last = run.history[-1] if run.history else {}
    passed = _verdict_of(run, fix)
    return {"status": "verified" if passed else "not_enough", "fix": fix.to_dict(),
            "passed": passed,
            "epoch": last.get("epoch") if run.passed and run.stopped == "criteria met" else
            None,
            "epochs_run": last.get("epoch", 0),
            "pairwise_accuracy": _r(last.get("pairwise_accuracy")),
            "spearman": _r(last.get("spearman")), "score_std": _r(last.get("score_std")),
            "problem": "" if passed else run.problem(), "seconds": round(seconds, 2),
            "reused": reused}


def _r(v: Any) -> float | None:
    return None if v is None or not math.isfinite(v) else round(float(v), 4)


def verify_fixes(doc: Diagnosis, causes: Sequence[Cause]) -> None:
    """Verify the fixes of each of the first :data:`MAX_VERIFIED` causes (in place: each gets
    ``cause.verification`` and a fix text that starts with what was measured): each fix of
    :func:`fixes_for` alone, until one passes, at most :data:`MAX_RUNS` new runs in all."""
    budget = [MAX_RUNS]
    for c in causes[:MAX_VERIFIED]:
        fixes = fixes_for(doc, c)
        if not fixes[0].applicable:
            status = "consequence" if fixes[0].kind == "consequence" else "human"
            c.verification = {"status": status, "fix": fixes[0].to_dict()}
            c.fix = (f"Not verified: {fixes[0].human}. {c.fix}" if status == "consequence" else
                     f"Needs you, not verified: {fixes[0].human}. {c.fix}")
            continue
        if doc.gs is None:
            c.verification = {"status": "not_applicable", "fix": fixes[0].to_dict(),
                              "problem": "the graphs could not be loaded"}
            continue
        tried = []
        for fix in fixes:
            rec = _verify_one(doc, c, fix, budget)
            if rec is None:
                break
            tried.append(rec)
            if rec["passed"]:
                break
        if not tried:
            c.verification = {"status": "not_applicable", "fix": fixes[0].to_dict(),
                              "problem": "not tried: the verification budget "
                                         f"({MAX_RUNS} runs) was spent"}
            continue
        rec = tried[-1]
        c.verification = {**rec, "tried": tried[:-1]} if len(tried) > 1 else rec
        # what was measured leads the fix's text: the last fix tried (the verified one, when
        # one passed) first, then what was tried before it
        texts = [_measured_text(r, f) for r, f in zip(tried, fixes, strict=False)]
        c.fix = " ".join([texts[-1], *texts[:-1], c.fix])


def _verify_one(doc: Diagnosis, cause: Cause, fix: Fix, budget: list[int]
                ) -> dict[str, Any] | None:
    """The verification record of one fix (its run reused when an ablation made it); None
    when it needs a new run and the budget is spent."""
    if isinstance(doc.model, nn.Module) and fix.data == "degree_features":
        return {**_record(Run("", []), fix, 0.0, False), "status": "not_applicable",
                "problem": "a model given as an instance has a fixed input width"}
    t0 = time.perf_counter()
    run = doc.fix_runs.get(fix.key())
    # an ablation's run stopped at a plateau even while it learned: only a decided one
    if run is not None and not (run.passed or run.nonfinite or run.verdict is None
                                or run.verdict.red_flags):
        run = None
    reused = run is not None
    if run is None:
        if budget[0] <= 0:
            return None
        budget[0] -= 1
        doc.begin(f"verify: {cause.id}")
        run = _guarded_run(doc, fix, doc.train_split()[: doc.opts.n])
        doc.fix_runs[fix.key()] = run
    rec = _record(run, fix, run.seconds if reused else time.perf_counter() - t0, reused)
    doc.add_stage(f"verify: {cause.id}", "verified" if rec["passed"] else "not enough",
                  {"fix": fix.label, **run.summary(), **({"reused": True} if reused else {})},
                  t0)
    return rec


def _measured_text(rec: dict[str, Any], fix: Fix) -> str:
    """What the verification measured, in one sentence that leads the fix's text."""
    nums = (f"pairwise accuracy {_n(rec['pairwise_accuracy'])}, Spearman "
            f"{_n(rec['spearman'])}, score std {_n(rec['score_std'])}")
    if rec["status"] == "not_applicable":
        return f"Not tried: {fix.label}: {rec['problem']}."
    if rec["passed"] and fix.base == "overfit":
        return (f"Verified: with {fix.label}, the runbook's overfit test passes at epoch "
                f"{rec['epoch']} ({nums}).")
    if rec["passed"]:
        how = (f"pass the overfit test at epoch {rec['epoch']}" if rec["epoch"] else
               f"learn the overfit graphs (no red flag after {rec['epochs_run']} epochs)")
        return f"Verified: with {fix.label}, your settings {how} ({nums})."
    what = "the runbook's overfit test" if fix.base == "overfit" else \
        "your settings on the overfit graphs"
    return (f"Tried: {fix.label} alone is not enough: {what} still fails after "
            f"{rec['epochs_run']} epochs ({nums}; {rec['problem']}).")


def _n(v: float | None) -> str:
    return "-" if v is None else f"{v:.3g}"
