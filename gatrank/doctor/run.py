"""The collapse doctor: runs the runbook's checks end to end and names the likely causes.

Stages, in order, stopping as soon as the answer is clear:

1. **data**: every manifest problem (or, for graphs in memory, NaN/Inf and empty graphs);
   targets that do not vary; valid pairs under the configured ``tie_eps``/``margin_eps`` and
   batch size; node features that cannot tell graphs apart.
2. **loss**: the runbook's loss tests on synthetic scores: a gradient reaches the scores, the
   right order costs less than the reverse.
3. **model**: frozen parameters and the gradient path from the loss to every parameter.
4. **overfit**: the runbook's overfit test (first ``n`` training graphs, up to 500 epochs, lr
   5e-3, no dropout, full batch) on the user's model, loss and remaining settings, with
   :class:`~gatrank.checks.probes.ModelProbe` measurements at every logged epoch.
5. **your settings**: the same graphs with the user's own training settings, beside it.
6. **ablations**, only the ones that tell the remaining suspects apart: weight decay off, a
   shallower GAT with residuals, an unbounded score head, loss temperature 1, a lower or higher
   learning rate, your settings with the runbook's learning rate or without regularization,
   GATv2, the linear baseline (gatrank's GAT in place of a user's own model).
7. **held-out**: the user's settings on more training graphs, scored on graphs it never saw
   (a permutation test against chance).

:func:`diagnose` returns a :class:`DoctorReport`: a verdict and causes ranked most likely
first, each with the measured evidence and the runbook's fix. :func:`diagnose_history` gives
the history-only part cheaply for a run that already happened (a notebook's overfit run).
"""

from __future__ import annotations

import copy
import logging
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gatrank.checks.probes import (
    ModelProbe,
)
from gatrank.checks.static import (
    check_graphs,
    check_loss,
    feature_stats,
    frozen_parameters,
    gradient_path,
    pair_stats,
)
from gatrank.checks.verdict import THRESHOLDS, evaluate_verdict, loss_drop
from gatrank.config import Config, load_config, overfit_config
from gatrank.doctor.report import (
    CAUSES,
    DOCTOR_THRESHOLDS,
    Cause,
    DoctorOptions,
    DoctorReport,
    Stage,
)
from gatrank.losses import LN2
from gatrank.runtime import torch_threads

__all__ = [
    "diagnose",
    "diagnose_history",
]

logger = logging.getLogger(__name__)



class _Stop(Exception):
    """Raised from a training callback to end a run whose answer is clear."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class _Run:
    """One training run of the doctor and what it showed."""

    name: str
    history: list[dict[str, Any]]
    error: str = ""
    nonfinite: bool = False
    stopped: str = ""
    seconds: float = 0.0

    @property
    def verdict(self):
        return evaluate_verdict(self.history) if self.history else None

    @property
    def passed(self) -> bool:
        return not self.nonfinite and self.verdict is not None and self.verdict.passed

    @property
    def learns(self) -> bool:
        """No red flag: not random, not collapsed, gradients flow, the loss moves."""
        v = self.verdict
        return not self.nonfinite and v is not None and not v.red_flags

    def problem(self) -> str:
        """What went wrong, in words: the non-finite error or the red flags raised."""
        if self.error:
            return self.error
        v = self.verdict
        if v is None:
            return "no epoch was logged"
        return "red flags: " + (", ".join(c.name for c in v.red_flags) or "none")

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"epochs": self.history[-1]["epoch"] if self.history else 0}
        if self.history:
            last = self.history[-1]
            out.update(pairwise_accuracy=round(last["pairwise_accuracy"], 4),
                       spearman=round(last["spearman"], 4), score_std=last["score_std"],
                       loss=last["loss"], grad_norm_median=_median_grad(self.history))
        if self.stopped:
            out["stopped"] = self.stopped
        if self.error:
            out["error"] = self.error
        return out


def _plateau(history: Sequence[dict], window: int) -> bool:
    """The best loss of the last ``window`` epochs is not 1% below the best loss before them
    (non-finite losses count as no improvement)."""
    epoch = history[-1]["epoch"]
    if epoch < window:
        return False
    before = [r["loss"] for r in history if r["epoch"] <= epoch - window and
              math.isfinite(r["loss"])]
    recent = [r["loss"] for r in history if r["epoch"] > epoch - window and
              math.isfinite(r["loss"])]
    if not before:
        return False
    best_recent = min(recent, default=math.inf)
    return best_recent > min(before) * (1 - DOCTOR_THRESHOLDS["flat_loss_drop"])


def _median_grad(history: Sequence[dict]) -> float:
    return float(np.median([h["grad_norm"] for h in history])) if history else 0.0


class _Doctor:
    """One diagnosis: the setup, the runs made so far and the causes found."""

    def __init__(self, gs, config: Config, model, loss, model_edit, opts: DoctorOptions,
                 seed: int) -> None:
        self.gs = gs
        self.cfg = config.updated({"training.enable_debug_logs": False, "training.seed": seed})
        self.model = model
        self.loss = loss
        self.model_edit = model_edit
        self.opts = opts
        self.builtin = model in (None, "", "gat")
        self.causes: dict[str, Cause] = {}
        self.stages: list[Stage] = []
        self.notes: list[str] = []
        self.static: dict[str, Any] = {}
        """Model-stage results: ``frozen``, ``path`` and ``numel`` (parameter name -> size)."""
        self.runbook_verdict: dict[str, Any] | None = None
        self._splits: dict[str, list[int]] | None = None

    # ----------------------------------------------------------------- bookkeeping

    def cause(self, cid: str, evidence: str, score: float, stage: str, fix: str = "",
              **measured: Any) -> None:
        """Raise (or strengthen) a cause; evidence of repeated raises is joined."""
        fix = fix or CAUSES[cid]["fix"]
        old = self.causes.get(cid)
        if old is None:
            self.causes[cid] = Cause(cid, evidence, fix, score, stage, dict(measured))
            return
        if evidence not in old.evidence:
            old.evidence = f"{old.evidence}; {evidence}" if score <= old.score else \
                f"{evidence}; {old.evidence}"
        if score > old.score:
            old.score, old.stage = score, stage
            if fix != CAUSES[cid]["fix"]:
                old.fix = fix
        old.measured.update(measured)

    def ranked(self) -> list[Cause]:
        order = list(CAUSES)
        return sorted(self.causes.values(), key=lambda c: (-c.score, order.index(c.id)))

    def strongest(self) -> float:
        return max((c.score for c in self.causes.values()), default=0.0)

    # ----------------------------------------------------------------- models and runs

    def maker(self, model=None) -> Callable[[int], nn.Module]:
        spec = self.model if model is None else model
        edit = self.model_edit if model is None else None

        def make(in_channels: int, cfg: Config) -> nn.Module:
            from gatrank.model import build_model

            if isinstance(spec, nn.Module):
                net = copy.deepcopy(spec)
            elif callable(spec):
                net = spec(in_channels)
            else:
                net = build_model(in_channels, cfg.model, spec or "")
            return edit(net) if edit is not None else net

        return make

    def train_split(self) -> list[int]:
        from gatrank.data import split_indices

        if self._splits is None:
            try:
                self._splits = split_indices(self.gs, seed=self.cfg.training.seed,
                                             val_fraction=0.25, test_fraction=0.25)
            except ValueError as exc:  # a split column with holes: fall back to the order
                self.notes.append(f"manifest split column not usable ({exc}); using row order")
                half = len(self.gs) // 2
                self._splits = {"train": list(range(half)), "val": list(range(half, len(self.gs))),
                                "test": []}
            if len(self._splits["train"]) < max(2, len(self.gs) // 4):
                self._splits = {"train": list(range(len(self.gs))), "val": [], "test": []}
        return self._splits["train"]

    def run(self, name: str, cfg: Config, idx: Sequence[int], *, stop_on_pass: bool,
            model=None, keep: list[nn.Module] | None = None) -> _Run:
        """Train on ``idx`` with ``cfg``; stops once the criteria pass or the loss stalls.
        The trained model is appended to ``keep`` when given."""
        from gatrank.training import NonFiniteError, train

        records: list[dict[str, Any]] = []
        stall = self.opts.stall_epochs

        def watch(rec: dict[str, Any]) -> None:
            records.append(rec)
            if stop_on_pass and len(records) > 1 and evaluate_verdict(records).passed:
                raise _Stop("criteria met")
            if _plateau(records, stall):
                raise _Stop(f"loss plateaued: no 1% improvement in the {stall} epochs "
                            f"before epoch {rec['epoch']}")

        make = self.maker(model)

        def build(in_channels: int) -> nn.Module:
            net = make(in_channels, cfg)
            if keep is not None:
                keep.append(net)
            return net

        out = _Run(name, records)
        t0 = time.perf_counter()
        try:
            train(cfg, graphs=self.gs, model=build, loss=self.loss or None,
                  progress=False, splits={"train": list(idx), "val": [], "test": []},
                  callbacks=[watch], probes=[ModelProbe(self.opts.probe_graphs)])
        except _Stop as stop:
            out.stopped = stop.reason
        except NonFiniteError as exc:
            out.nonfinite = True
            out.error = str(exc).split("; stopped")[0]
        out.seconds = time.perf_counter() - t0
        logger.info("doctor: %s run: %s", name, out.summary())
        return out

    def overfit_cfg(self, **overrides: Any) -> Config:
        cfg = overfit_config(self.cfg, self.opts.n).updated(
            {"training.epochs": self.opts.overfit_epochs})
        return cfg.updated(overrides) if overrides else cfg

    def user_cfg(self, **overrides: Any) -> Config:
        cfg = self.cfg.updated({"training.overfit_n": 0, "training.epochs": self.opts.user_epochs,
                                "training.log_every": 10, "training.patience": 0})
        return cfg.updated(overrides) if overrides else cfg

    # ----------------------------------------------------------------- stages

    def add_stage(self, name: str, status: str, summary: dict[str, Any], t0: float) -> None:
        self.stages.append(Stage(name, status, summary, time.perf_counter() - t0))

    def data_stage(self, problems: Sequence, dropped: Sequence) -> bool:
        """Data checks; True when diagnosis must stop here."""
        t0 = time.perf_counter()
        gs, lc = self.gs, self.cfg.loss
        stop = False
        by_code: dict[str, list] = {}
        for p in problems:
            if not p.is_warning:
                by_code.setdefault(p.code, []).append(p)
        mapping = {"nonfinite_features": "nan_or_inf_inputs",
                   "nonfinite_edge_features": "nan_or_inf_inputs",
                   "nan_target": "nan_or_inf_inputs", "inf_target": "nan_or_inf_inputs",
                   "missing_target": "nan_or_inf_inputs", "empty_graph": "empty_graphs",
                   "no_edges": "empty_graphs"}
        for code, items in by_code.items():
            cid = mapping.get(code, "invalid_data")
            where = ", ".join(f"{p.id}" + (f" (line {p.line})" if p.line else "")
                              for p in items[:5])
            more = f" and {len(items) - 5} more" if len(items) > 5 else ""
            self.cause(cid, f"{len(items)} graph(s) with {code}: {items[0].problem} — {where}"
                            f"{more}", 1.0, "data", **{code: len(items)})
            stop = True
        if dropped:
            self.notes.append(f"{len(dropped)} manifest row(s) were dropped under "
                              "data.on_error=skip; they are not part of this diagnosis")
        summary: dict[str, Any] = {"graphs": 0 if gs is None else len(gs),
                                   "problems": sum(map(len, by_code.values()))}
        if stop:
            self.add_stage("data", "failed", summary, t0)
            return True
        idx = self.train_split()
        y = torch.tensor(gs.table["y"].to_numpy(dtype=np.float64))
        group = torch.cat([g.group.reshape(-1) for g in gs.graphs]) \
            if all(hasattr(g, "group") for g in gs.graphs) else None
        grouped = group is not None and bool((group >= 0).any())
        if not grouped:
            group = None
        sizes = torch.unique(group, return_counts=True)[1] if grouped else torch.tensor([len(y)])
        total_pairs = int((sizes * (sizes - 1) // 2).sum())  # unordered pairs, ties included
        tight = pair_stats(y, len(y), tie_eps=1e-6, group=group, shuffle=False)["pairs_all"]
        every = pair_stats(y, len(y), margin_eps=lc.margin_eps, tie_eps=lc.tie_eps, group=group,
                           shuffle=False)["pairs_all"]
        summary.update(y_min=float(y.min()), y_max=float(y.max()), y_std=float(y.std()),
                       valid_pairs=every)
        spread = float(y.max() - y.min())
        if total_pairs == 0:
            self.cause("no_valid_pairs", f"0 valid pairs: every one of the {len(sizes)} groups "
                       "has a single graph, and pairs form only inside a group", 1.0, "data",
                       valid_pairs=0, num_groups=len(sizes))
        elif tight == 0:
            self.cause("constant_targets",
                       f"all {len(y)} targets are equal within 1e-6"
                       + (" inside every group" if grouped and spread > 1e-6 else "")
                       + f" (min {float(y.min()):.6g}, max {float(y.max()):.6g})",
                       1.0, "data", y_std=float(y.std()))
        elif every == 0:
            reasons = [f"loss.{k}={v:g} is at least the whole target spread ({spread:.4g})"
                       for k, v in (("tie_eps", lc.tie_eps), ("margin_eps", lc.margin_eps))
                       if v >= spread]
            self.cause("no_valid_pairs", f"0 valid pairs among {len(y)} graphs: "
                       + ("; ".join(reasons) or "no two graphs of a group differ by more than "
                          f"tie_eps={lc.tie_eps:g} and margin_eps={lc.margin_eps:g}"),
                       1.0, "data", valid_pairs=0)
        if self.causes:
            self.add_stage("data", "failed", summary, t0)
            return True
        ties = 1 - tight / total_pairs
        summary["tie_fraction"] = round(ties, 4)
        if ties >= DOCTOR_THRESHOLDS["nearly_constant_ties"]:
            self.cause("constant_targets", f"{ties:.1%} of target pairs are ties (within 1e-6): "
                       "the targets are nearly constant", 0.8, "data", tie_fraction=ties)
        gtr = None if group is None else group[idx]
        batches = pair_stats(y[idx], self.cfg.training.batch_size, margin_eps=lc.margin_eps,
                             tie_eps=lc.tie_eps, group=gtr, seed=self.cfg.training.seed)
        summary["batches_without_pairs"] = (f"{batches['batches_without_pairs']}/"
                                            f"{batches['batches']}")
        frac = batches["fraction_without_pairs"]
        if frac >= DOCTOR_THRESHOLDS["without_pairs"]:
            self.cause("no_valid_pairs",
                       f"{batches['batches_without_pairs']} of {batches['batches']} training "
                       f"batches of {self.cfg.training.batch_size} graphs have no valid pair "
                       f"(mean {batches['pairs_mean']:.1f} pairs per batch)",
                       0.5 + 0.4 * frac, "data", fraction_without_pairs=frac)
        feats = feature_stats(gs.graphs)
        summary.update(indistinguishable=round(feats["indistinguishable"], 4),
                       constant_feature_columns=f"{feats['constant_columns']}/"
                                                f"{feats['num_features']}")
        if feats["identical_nodes"]:
            self.cause("uninformative_features",
                       f"every node of all {len(gs)} graphs has the same feature vector (all "
                       f"{feats['num_features']} columns constant): a GAT with mean/max pooling "
                       "gives every graph the same embedding", 1.0, "data",
                       **{k: feats[k] for k in ("indistinguishable", "constant_columns")})
            stop = True
        elif feats["indistinguishable"] >= DOCTOR_THRESHOLDS["indistinguishable"]:
            self.cause("uninformative_features",
                       f"{feats['indistinguishable']:.0%} of graphs cannot be told from another "
                       "graph with a different target by features and structure (3 rounds of "
                       "1-WL, the limit of message passing; "
                       f"{feats['distinct_signatures']} distinct of {len(gs)})",
                       0.6 + 0.3 * feats["indistinguishable"], "data",
                       indistinguishable=feats["indistinguishable"])
        self.add_stage("data", "failed" if stop else "warning" if self.causes else "ok",
                       summary, t0)
        return stop

    def loss_stage(self) -> bool:
        from gatrank.losses import make_loss_fn

        t0 = time.perf_counter()
        lc = self.cfg.loss
        fn = make_loss_fn(self.loss or None, self.cfg)
        res = check_loss(fn, scale=max(1.0, 2 * (lc.tie_eps + lc.margin_eps)),
                         seed=self.cfg.training.seed)
        summary = {k: res[k] for k in ("loss_perfect", "loss_reversed", "loss_constant",
                                       "grad_norm")}
        if not (res["requires_grad"] and res["has_gradient"]):
            why = ("the loss does not require grad" if not res["requires_grad"] else
                   "its gradient with respect to the scores is missing or zero")
            self.cause("loss_detached", f"on 16 synthetic graphs with distinct targets "
                       f"{why} (loss value {res['loss_constant']:.4g} at constant scores)",
                       1.0, "loss", grad_norm=res["grad_norm"])
        elif not (res["prefers_correct_order"] and res["descent_agrees"]):
            self.cause("loss_wrong_direction",
                       f"the perfect ordering costs {res['loss_perfect']:.4g} and its reverse "
                       f"{res['loss_reversed']:.4g}; a gradient step from constant scores "
                       f"{'moves towards' if res['descent_agrees'] else 'moves against'} the "
                       "target order", 1.0, "loss",
                       loss_perfect=res["loss_perfect"], loss_reversed=res["loss_reversed"])
        if not res["finite_large_gaps"]:
            self.notes.append("the loss or its gradient is not finite at score gaps of 1e4: "
                              "compute it with softplus (stable) rather than log(1 + exp)")
        failed = bool({"loss_detached", "loss_wrong_direction"} & set(self.causes))
        self.add_stage("loss", "failed" if failed else "ok", summary, t0)
        return failed

    def model_stage(self, idx: Sequence[int]) -> bool:
        from torch_geometric.data import Batch

        from gatrank.losses import make_loss_fn
        from gatrank.runtime import set_seed

        t0 = time.perf_counter()
        set_seed(self.cfg.training.seed)
        net = self.maker()(self.gs.num_features, self.cfg)
        frozen = frozen_parameters(net)
        batch = Batch.from_data_list([self.gs[i] for i in idx])
        path = gradient_path(net, make_loss_fn(self.loss or None, self.cfg), batch)
        self.static = {"frozen": frozen, "path": path,
                       "numel": {n: p.numel() for n, p in net.named_parameters()}}
        summary = {"parameters": frozen["num_parameters"],
                   "trainable_fraction": round(frozen["trainable_fraction"], 4),
                   "grad_norm_at_init": path["grad_norm"], "unused": len(path["unused"]),
                   "zero_grad": len(path["zero"])}
        stop = False
        trainable = [n for n, p in net.named_parameters() if p.requires_grad]
        if frozen["trainable_fraction"] == 0:
            self.cause("frozen_parameters", f"all {len(frozen['frozen'])} parameter tensors "
                       "have requires_grad=False: nothing can be trained", 1.0, "model",
                       trainable_fraction=0.0)
            stop = True
        elif trainable and (not path["requires_grad"] or len(path["unused"]) == len(trainable)):
            self.cause("loss_detached", "on a real batch the loss reaches none of the "
                       f"{len(trainable)} trainable parameter tensors (no gradient path from "
                       "the model's scores to the loss)", 1.0, "model")
            stop = True
        status = "failed" if stop else "ok"
        if not stop and path["requires_grad"] and (
                path["grad_norm"] < DOCTOR_THRESHOLDS["vanishing_grad_norm"]):
            # not a cause by itself (an untrained model can start flat), but worth a look
            status = "warning"
            self.notes.append(
                f"at initialisation the gradient norm on a real batch is "
                f"{path['grad_norm']:.3g} (runbook: > {THRESHOLDS['grad_norm']:g}) and "
                f"{len(path['zero'])} parameter tensor(s) get exactly zero gradient: gradients "
                "barely reach the parameters before any training (dead or saturated units?)")
        self.add_stage("model", status, summary, t0)
        return stop

    # ----------------------------------------------------------------- reading runs

    def symptoms(self, run: _Run, stage: str) -> None:
        """Causes suggested by a failing run's measurements (and the static checks)."""
        h = run.history
        t = DOCTOR_THRESHOLDS
        frozen, path = self.static.get("frozen"), self.static.get("path")
        explained = set()
        if frozen is not None:
            stuck = set(frozen["frozen"]) | set(frozen["not_in_optimizer"])
            stuck |= set(path["unused"]) if path else set()
            params = self.static["numel"]
            total = sum(params.values()) or 1
            frac = sum(params.get(n, 0) for n in stuck) / total
            if stuck:
                names = ", ".join(sorted(stuck)[:4]) + (" ..." if len(stuck) > 4 else "")
                left = total - sum(params.get(n, 0) for n in stuck)
                self.cause("frozen_parameters",
                           f"{len(stuck)} of {len(params)} parameter tensors ({names}) have "
                           f"requires_grad=False or get no gradient: {frac:.2%} of the weights, "
                           f"{left} left to train",
                           0.9 if frac >= t["frozen_fraction"] else 0.5, stage,
                           frozen_fraction=frac)
                if frac >= t["frozen_fraction"]:
                    explained.add("frozen")
        big = path is not None and path["grad_norm"] >= t["exploding_grad_norm"]
        if path is not None and (not path["finite"] or big):
            gn = path["grad_norm"]
            self.cause("exploding_gradients",
                       f"gradient norm {gn:.3g} before any update (threshold "
                       f"{t['exploding_grad_norm']:g}); loss {path['loss']:.4g} = "
                       f"{path['loss'] / LN2:.3g} x ln 2", 0.9, stage, grad_norm_at_init=gn)
            explained.add("exploding")
        at = re.search(r"at epoch (\d+), batch (\d+)", run.error)
        if run.nonfinite and at and at.groups() == ("1", "0"):
            self.cause("exploding_gradients", f"{run.error} — at the very first step, so no "
                       "learning-rate step caused it", 0.9, stage)
        if not h:
            return
        first, last = h[0], h[-1]
        dead = [r.get("dead_fraction") for r in h if r.get("dead_fraction") is not None]
        if dead and max(dead) >= t["dead_fraction"]:
            at_init = dead[0] >= t["dead_fraction"]
            when = "from the first epoch" if at_init else f"by epoch {last['epoch']}"
            self.cause("dead_activations",
                       f"{max(dead):.0%} of the score head's ReLU units output 0 for every probe "
                       f"graph ({when}; threshold {t['dead_fraction']:.0%})",
                       0.9 if at_init else 0.7, stage, dead_fraction=max(dead))
            explained.add("dead")
        sat = [r.get("saturated_fraction") for r in h if r.get("saturated_fraction") is not None]
        if sat and max(sat) >= t["saturated_fraction"]:
            at_init = sat[0] >= t["saturated_fraction"]
            self.cause("score_head_saturated",
                       f"{max(sat):.0%} of the bounded outputs lie within 0.1% of their limits "
                       f"(score std {last['score_std']:.3g})", 0.9 if at_init else 0.7, stage,
                       saturated_fraction=max(sat))
            explained.add("saturated")
        mads = self._mad_ratio(first)
        if mads is not None and mads[0] < t["oversmoothing_mad_ratio"]:
            ratio, mad_last, n_layers = mads
            self.cause("oversmoothing",
                       f"node embeddings of a graph become indistinguishable with depth: mean "
                       f"average distance {mad_last:.3g} after the last of {n_layers} GAT layers, "
                       f"{ratio:.2g} x its largest value at an earlier layer", 0.7, stage,
                       mad_ratio=ratio)
            explained.add("oversmoothing")
        inp = first.get("layers", {}).get("input")
        if inp is not None and inp["distinct_graphs"] <= 0.05 and last["score_std"] < 1e-3:
            self.cause("uninformative_features",
                       f"only {inp['distinct_graphs']:.0%} of probe graph pairs differ in their "
                       f"pooled input features; score std {last['score_std']:.2g}", 0.85, stage,
                       distinct_graphs=inp["distinct_graphs"])
        gmed = _median_grad(h)
        min_loss = min((r["loss"] for r in h if math.isfinite(r["loss"])), default=math.nan)
        if (gmed < t["vanishing_grad_norm"] and math.isfinite(min_loss)
                and min_loss >= t["near_ln2"] * LN2):
            why = ""
            temp = self.cfg.loss.temperature
            if temp > 10:
                why = f"; loss.temperature={temp:g} divides every score gap by {temp:g}"
            self.cause("vanishing_gradients",
                       f"median gradient norm {gmed:.3g} (runbook: > {t['vanishing_grad_norm']}) "
                       f"while the loss stays at {min_loss:.4g} = {min_loss / LN2:.3f} x ln 2, "
                       f"the loss of constant scores{why}",
                       0.5 if explained else 0.8, stage, grad_norm_median=gmed,
                       loss_over_ln2=min_loss / LN2)
        if (last["spearman"] < -THRESHOLDS["flag_spearman"] and last["pairwise_accuracy"] < 0.4
                and last["spearman"] < first["spearman"] - 0.3):
            self.cause("loss_wrong_direction",
                       f"training makes the ranking worse than random: Spearman "
                       f"{last['spearman']:.3f}, pairwise accuracy {last['pairwise_accuracy']:.3f}",
                       0.8, stage, spearman=last["spearman"])
        without = [r.get("batches_without_pairs", 0) for r in h]
        if max(without, default=0) > 0:
            self.cause("no_valid_pairs", f"up to {max(without)} batch(es) per epoch had no valid "
                       "pair", 0.4, stage)

    @staticmethod
    def _mad_ratio(record: dict[str, Any]) -> tuple[float, float, int] | None:
        layers = {k: v for k, v in record.get("layers", {}).items() if k != "input"}
        if len(layers) < 2:
            return None
        mads = [v["mad"] for v in layers.values()]
        top = max(mads[:-1])
        if top <= 0:
            return None
        return mads[-1] / top, mads[-1], len(mads)

    @staticmethod
    def lr_symptom(run: _Run, lr: float) -> str:
        """``high``, ``low`` or ``""``: what a failing run at learning rate ``lr`` says about it."""
        h, t = run.history, DOCTOR_THRESHOLDS
        if run.nonfinite or lr > t["lr_high"]:
            return "high"
        if h and any(not math.isfinite(r["loss"]) for r in h):
            return "high"
        if h and h[-1]["loss"] > 1.2 * h[0]["loss"]:
            return "high"
        flat = h and loss_drop(h) < t["flat_loss_drop"]
        if flat and _median_grad(h) >= t["vanishing_grad_norm"]:
            return "low"
        if lr < t["lr_low"]:
            return "low"
        return ""

    def failure_verdict(self, run: _Run) -> str:
        if run.nonfinite:
            return "unstable"
        if run.history and run.history[-1]["score_std"] < THRESHOLDS["flag_score_std"]:
            return "collapsed"
        return "cannot_fit"

    # ----------------------------------------------------------------- the flow

    def go(self, problems: Sequence, dropped: Sequence) -> str:
        if self.data_stage(problems, dropped):
            return "bad_data"
        if self.loss_stage():
            return "broken_loss"
        idx = self.train_split()[: self.opts.n]
        if self.model_stage(idx):
            return "broken_loss" if "loss_detached" in self.causes else "cannot_fit"
        t0 = time.perf_counter()
        rb = self.run("overfit", self.overfit_cfg(), idx, stop_on_pass=True)
        self.runbook_verdict = rb.verdict.to_dict() if rb.verdict else None
        self.add_stage("overfit", "passed" if rb.passed else "failed",
                       {"graphs": len(idx), **rb.summary()}, t0)
        if not rb.passed:
            self.symptoms(rb, "overfit")
            if self.opts.ablations:
                self.overfit_ablations(rb, idx)
            if not self.causes:
                self.notes.append(
                    "no known cause matched the measurements; the runbook's advice for a model "
                    "that does not fit: check the loss is decreasing and gradients exist, then "
                    "increase model capacity or the learning rate")
            return self.failure_verdict(rb)
        t0 = time.perf_counter()
        mine = self.run("your settings", self.user_cfg(), idx, stop_on_pass=True)
        ok = mine.passed or mine.learns
        self.add_stage("your_settings", "learns" if ok else "failed",
                       {"graphs": len(idx), **mine.summary()}, t0)
        if not ok:
            if self.user_ablations(mine, idx):
                return self.failure_verdict(mine)
            self.notes.append("with your training settings the overfit subset is learned more "
                              f"slowly than with the runbook's ({mine.problem()})")
        if self.opts.heldout:
            return self.heldout_stage()
        return "healthy"

    def confirm(self, plans: list[tuple[str, dict[str, Any], Any, str]], base: Callable,
                idx: Sequence[int], failed: _Run, stage: str, learn: bool) -> bool:
        """Run ablations in order until one fixes the run; that one confirms its cause."""
        for label, overrides, model, cid in plans:
            t0 = time.perf_counter()
            run = self.run(label, base(**overrides), idx, stop_on_pass=True, model=model)
            fixed = run.passed or (learn and run.learns)
            self.add_stage(f"ablation: {label}", "fixes" if fixed else "no change",
                           run.summary(), t0)
            if fixed:
                b, a = failed.summary(), run.summary()
                self.cause(cid, f"{label} fixes it: pairwise accuracy "
                           f"{b.get('pairwise_accuracy', math.nan):.3f} -> "
                           f"{a['pairwise_accuracy']:.3f}, score std "
                           f"{b.get('score_std', math.nan):.3g} -> {a['score_std']:.3g} (before: "
                           f"{failed.problem()})", 0.95, stage,
                           fix=self._fix_for(cid, overrides), ablation=label)
                return True
        return False

    def _fix_for(self, cid: str, overrides: dict[str, Any]) -> str:
        changes = ", ".join(f"{k}: {_setting(self.cfg, k)!r} -> {v!r}"
                            for k, v in overrides.items())
        return f"{CAUSES[cid]['fix']} Here: {changes}." if changes else CAUSES[cid]["fix"]

    def overfit_ablations(self, rb: _Run, idx: Sequence[int]) -> None:
        cfg, mc = self.cfg, self.cfg.model
        plans: list[tuple[str, dict[str, Any], Any, str]] = []
        if self.strongest() < DOCTOR_THRESHOLDS["strong"]:
            if cfg.training.weight_decay > 0:
                plans.append(("weight decay off", {"training.weight_decay": 0.0}, None,
                              "over_regularized"))
            if self.builtin and (mc.num_layers > 4 or not mc.residual):
                d = type(mc)()
                plans.append((f"the default depth: {d.num_layers} GAT layers of {d.hidden_dim} "
                              "with residuals",
                              {"model.num_layers": d.num_layers, "model.residual": True,
                               "model.hidden_dim": max(mc.hidden_dim, d.hidden_dim),
                               "model.heads": d.heads}, None, "oversmoothing"))
            if self.builtin and mc.head in ("sigmoid", "tanh"):
                plans.append(("unbounded score head", {"model.head": "layernorm"}, None,
                              "score_head_saturated"))
            if cfg.loss.temperature > 10:
                plans.append(("loss temperature 1", {"loss.temperature": 1.0}, None,
                              "vanishing_gradients"))
            lr = self.overfit_cfg().training.learning_rate
            sym = self.lr_symptom(rb, lr)
            if sym == "high":
                plans.append((f"learning rate {lr / 10:g}", {"training.learning_rate": lr / 10},
                              None, "learning_rate_too_high"))
            elif sym == "low":
                plans.append((f"learning rate {lr * 10:g}", {"training.learning_rate": lr * 10},
                              None, "learning_rate_too_low"))
        if self.confirm(plans, self.overfit_cfg, idx, rb, "ablation", learn=False):
            return
        if self.strongest() >= DOCTOR_THRESHOLDS["strong"]:
            return
        if self.builtin and mc.conv == "gat":
            t0 = time.perf_counter()
            run = self.run("GATv2", self.overfit_cfg(**{"model.conv": "gatv2"}), idx,
                           stop_on_pass=True)
            self.add_stage("ablation: GATv2", "fixes" if run.passed else "no change",
                           run.summary(), t0)
            if run.passed:
                self.notes.append("GATv2 (dynamic attention) fits where GAT does not: set "
                                  "model.conv: gatv2")
                return
        reference = "linear" if self.builtin else "gat"
        label = "the linear baseline" if self.builtin else "gatrank's GAT in place of your model"
        t0 = time.perf_counter()
        run = self.run(label, self.overfit_cfg(), idx, stop_on_pass=True, model=reference)
        self.add_stage(f"ablation: {label}", "fits" if run.passed else "cannot fit",
                       run.summary(), t0)
        learning = (bool(rb.history) and loss_drop(rb.history) >= THRESHOLDS["flag_loss_drop"]
                    and _median_grad(rb.history) >= DOCTOR_THRESHOLDS["vanishing_grad_norm"])
        if run.passed and reference == "gat" and learning:
            last, ref = rb.history[-1], run.history[-1]
            self.cause("insufficient_capacity",
                       f"your model learns (loss {rb.history[0]['loss']:.4g} -> "
                       f"{last['loss']:.4g}, "
                       f"median gradient norm {_median_grad(rb.history):.3g}) but plateaus at "
                       f"pairwise accuracy {last['pairwise_accuracy']:.3f} after {last['epoch']} "
                       "epochs, while gatrank's GATRanker with the same loss and settings fits "
                       f"the same graphs (pairwise accuracy {ref['pairwise_accuracy']:.3f} at "
                       f"epoch {ref['epoch']})", 0.9, "ablation")
        elif run.passed:
            self.notes.append(f"{label} fits these graphs, so data and loss can be learned: the "
                              "problem is in the model")
        else:
            self.notes.append(f"{label} cannot fit these graphs either: check the data and the "
                              "loss first")

    def user_ablations(self, mine: _Run, idx: Sequence[int]) -> bool:
        """Your settings failed where the runbook's passed: try the runbook's value of each
        suspect setting. True when a cause was found (confirmed or suspected)."""
        t = DOCTOR_THRESHOLDS
        ours, theirs = self.cfg.training.learning_rate, self.overfit_cfg().training.learning_rate
        sym = self.lr_symptom(mine, ours)
        plans: list[tuple[str, dict[str, Any], Any, str]] = []
        if (sym == "high" and ours > theirs) or (sym == "low" and ours < theirs):
            cid = "learning_rate_too_high" if ours > theirs else "learning_rate_too_low"
            plans.append((f"your settings with learning rate {theirs:g}",
                          {"training.learning_rate": theirs}, None, cid))
        if (self.cfg.model.dropout >= t["heavy_dropout"]
                or self.cfg.training.weight_decay >= t["heavy_weight_decay"]):
            plans.append(("your settings without dropout and weight decay",
                          {"model.dropout": 0.0, "training.weight_decay": 0.0}, None,
                          "over_regularized"))
        if self.opts.ablations and self.confirm(plans, self.user_cfg, idx, mine,
                                                "your settings", learn=True):
            return True
        for _, overrides, _, cid in plans:  # suspected, not confirmed
            yours = ", ".join(f"{k}={_setting(self.cfg, k)!r}" for k in overrides)
            self.cause(cid, f"your settings ({yours}) fail where the runbook's pass: "
                       f"{mine.problem()}", 0.5, "your settings")
        if not plans:
            self.symptoms(mine, "your settings")
        return self.strongest() >= 0.5

    def heldout_stage(self) -> str:
        from gatrank.runtime import resolve_device
        from gatrank.training import predict

        t0 = time.perf_counter()
        self.train_split()
        sp = self._splits
        train_idx = sp["train"][: self.opts.heldout_train]
        held = (sp.get("val", []) + sp.get("test", []))[: self.opts.heldout_max]
        if len(held) < 8 or len(train_idx) < 8:
            self.notes.append(f"held-out check skipped: {len(held)} held-out and "
                              f"{len(train_idx)} training graphs (needs 8 of each)")
            self.add_stage("held-out", "skipped", {"held_out": len(held)}, t0)
            return "healthy"
        cfg = self.user_cfg(**{"training.epochs": self.opts.heldout_epochs})
        device = resolve_device(cfg.training.device)
        held_graphs = [self.gs[i] for i in held]

        def score(model) -> tuple[float, float, dict]:
            box: list[nn.Module] = []
            run = self.run("held-out" if model is None else f"held-out {model}", cfg, train_idx,
                           stop_on_pass=False, model=model, keep=box)
            out = predict(box[-1], held_graphs, device)
            stat, p = _signal_test(out["scores"].numpy(), out["targets"].numpy(),
                                   _groups(held_graphs), self.cfg.loss.tie_eps,
                                   self.opts.permutations, self.cfg.training.seed)
            return stat, p, run.summary()

        stat, p, train_summary = score(None)
        summary = {"train_graphs": len(train_idx), "held_out": len(held),
                   "pairwise_accuracy": round(stat, 4), "p_value": round(p, 4),
                   "train_pairwise_accuracy": train_summary.get("pairwise_accuracy")}
        if p <= DOCTOR_THRESHOLDS["signal_p"]:
            self.add_stage("held-out", "ok", summary, t0)
            return "healthy"
        lin_stat, lin_p, _ = score("linear")
        summary.update(linear_pairwise_accuracy=round(lin_stat, 4), linear_p_value=round(lin_p, 4))
        self.add_stage("held-out", "failed", summary, t0)
        fit = train_summary.get("pairwise_accuracy", float("nan"))
        base = (f"the model fits the {self.opts.n} graphs of the overfit test and reaches "
                f"pairwise accuracy {fit:.3f} on {len(train_idx)} training graphs, but ranks "
                f"{len(held)} held-out graphs at chance: pairwise accuracy {stat:.3f} "
                f"(permutation p = {p:.3g})")
        if lin_p <= DOCTOR_THRESHOLDS["signal_p"]:
            self.cause("does_not_generalize", f"{base}; the linear baseline reaches "
                       f"{lin_stat:.3f} (p = {lin_p:.3g})", 0.85, "held-out",
                       held_out_pairwise_accuracy=stat, p_value=p)
        else:
            self.cause("no_signal", f"{base}; the linear baseline is at chance too "
                       f"({lin_stat:.3f}, p = {lin_p:.3g})", 0.9, "held-out",
                       held_out_pairwise_accuracy=stat, p_value=p)
        return "no_generalization"


def _setting(cfg: Config, dotted: str) -> Any:
    section, key = dotted.split(".")
    return getattr(getattr(cfg, section), key)


def _groups(graphs: Sequence) -> np.ndarray | None:
    if not all(hasattr(g, "group") for g in graphs):
        return None
    g = np.array([int(x.group.reshape(-1)[0]) for x in graphs])
    return None if (g < 0).all() else g


def _signal_test(scores: np.ndarray, targets: np.ndarray, groups: np.ndarray | None,
                 tie_eps: float, permutations: int, seed: int) -> tuple[float, float]:
    """Pairwise accuracy (mean over groups with groups) and its one-sided permutation p-value:
    the fraction of score shuffles (within groups) that rank at least as well, +1 smoothed."""
    from gatrank.metrics import pairwise_accuracy

    units = [np.arange(len(scores))] if groups is None else \
        [np.flatnonzero(groups == g) for g in np.unique(groups)]
    units = [u for u in units if len(u) > 1]

    def stat(s: np.ndarray) -> float:
        return float(np.mean([pairwise_accuracy(s[u], targets[u], tie_eps=tie_eps)
                              for u in units])) if units else 0.5

    observed = stat(scores)
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(permutations):
        s = scores.copy()
        for u in units:
            s[u] = s[rng.permutation(u)]
        hits += stat(s) >= observed
    return observed, (hits + 1) / (permutations + 1)


def _config_diff(user: Config, runbook: Config) -> list[dict[str, Any]]:
    u, r = user.to_dict(), runbook.to_dict()
    keys = ["training.learning_rate", "model.dropout", "training.batch_size", "training.epochs",
            "training.weight_decay", "training.grad_clip"]
    out = []
    for key in keys:
        sec, name = key.split(".")
        if u[sec][name] != r[sec][name] or (name == "weight_decay" and u[sec][name] > 0):
            out.append({"key": key, "yours": u[sec][name], "runbook": r[sec][name]})
    return out


def _load(graphs, manifest, cfg: Config) -> tuple[Any, list, list, str]:
    """(GraphSet or None, problems that count, rows dropped, where the graphs came from)."""
    if graphs is not None:
        return graphs, check_graphs(graphs.graphs), [], "in-memory graphs"
    from gatrank.data import check_manifest, load_graphs
    from gatrank.datasets import manifest_or_default

    path = manifest_or_default(manifest, cfg.data.manifest)
    report = check_manifest(path, allow_outside_root=cfg.data.allow_outside_root)
    if report.errors and cfg.data.on_error == "raise":
        return None, report.problems, [], str(path)
    gs = load_graphs(path, on_error=cfg.data.on_error,
                     allow_outside_root=cfg.data.allow_outside_root)
    return gs, check_graphs(gs.graphs), list(gs.dropped), str(path)


def diagnose(
    graphs=None,
    *,
    manifest: str | Path | None = None,
    config: Config | str | Path | None = None,
    model: str | Callable[[int], nn.Module] | nn.Module | None = None,
    loss: str | Callable | None = None,
    inject: str | None = None,
    options: DoctorOptions | None = None,
    seed: int | None = None,
) -> DoctorReport:
    """Diagnose why a ranking model collapses: run the stages and rank the causes.

    Args:
        graphs: a :class:`gatrank.data.GraphSet` already in memory (validated here too);
            default: load ``manifest``.
        manifest: manifest.csv; default ``config.data.manifest`` or the embedded default.
        config: a :class:`~gatrank.config.Config` or a YAML path (default: the defaults).
        model: ``None``/``"gat"`` for gatrank's GATRanker, ``"linear"``, an import string
            ``package.module:Name``, a factory ``in_channels -> nn.Module`` or a module (copied
            for every run).
        loss: the user's loss ``(scores, targets) -> scalar`` (import string or callable).
        inject: a fault of :mod:`gatrank.doctor.faults` to inject first (for demonstration).
        options: run budgets; :class:`DoctorOptions` defaults.
        seed: overrides ``training.seed`` (runs are seeded and deterministic on CPU).

    Returns:
        A :class:`DoctorReport`; ``report.causes`` is empty when the verdict is healthy.
    """
    opts = options or DoctorOptions()
    t_start = time.perf_counter()
    cfg = config if isinstance(config, Config) else load_config(config or None)
    seed = cfg.training.seed if seed is None else seed
    threads = opts.num_threads if opts.num_threads is not None else cfg.training.cpu_threads
    with torch_threads(threads):
        gs, problems, dropped, source = _load(graphs, manifest, cfg)
        model_edit = None
        fault = None
        if inject:
            from gatrank.doctor.faults import inject as inject_fault

            if gs is None:
                raise ValueError(f"cannot inject {inject!r}: the manifest {source} has problems; "
                                 "run without --inject or fix the data first")
            inj = inject_fault(inject, gs, cfg, loss, seed=seed)
            gs, cfg, loss, model_edit, fault = (inj.graphs, inj.config, inj.loss,
                                                inj.model_edit, inj.fault)
            problems = check_graphs(gs.graphs)
        doc = _Doctor(gs, cfg, model, loss, model_edit, opts, seed)
        verdict = doc.go(problems, dropped)
        causes = doc.ranked()
        if verdict == "healthy" and causes:
            doc.notes += [f"possible issue that did not stop training here: {c.id}: {c.evidence}"
                          for c in causes]
            causes = []
    setup = {"source": source, "graphs": len(gs) if gs is not None else 0,
             "model": model if isinstance(model, str) and model else
             ("gat" if model is None else getattr(model, "__name__", type(model).__name__)),
             "loss": loss if isinstance(loss, str) and loss else
             ("pairwise_rank_loss" if loss is None else getattr(loss, "__name__", "custom")),
             "seed": seed, "fault": fault.name if fault else None}
    return DoctorReport(verdict=verdict, causes=causes, stages=doc.stages, notes=doc.notes,
                        config_diff=_config_diff(doc.cfg, doc.overfit_cfg()),
                        runbook_verdict=doc.runbook_verdict, setup=setup,
                        seconds=time.perf_counter() - t_start)


def diagnose_history(history: Sequence[dict[str, Any]], *,
                     config: Config | None = None) -> DoctorReport:
    """The doctor's reading of a run that already happened (no training, milliseconds).

    Applies the runbook's verdict and the measurement rules of :func:`diagnose` to logged
    records (``train(...).history`` or ``metrics.jsonl``; records with
    :class:`~gatrank.checks.probes.ModelProbe` keys give more evidence). Without the static
    checks and ablations causes are *suspected*: scores stay below those of :func:`diagnose`.
    """
    if not history:
        raise ValueError("diagnose_history needs at least one logged record; train with "
                         "log_every small enough to log an epoch")
    t0 = time.perf_counter()
    cfg = config or Config()
    doc = _Doctor(None, cfg, None, None, None, DoctorOptions(), cfg.training.seed)
    run = _Run("history", list(history))
    run.nonfinite = any(not math.isfinite(r["loss"]) or r.get("skipped_steps", 0) > 0
                        for r in history)
    verdict = evaluate_verdict(history)
    last = history[-1]
    status = "healthy"
    if not verdict.passed or run.nonfinite:
        doc.symptoms(run, "history")
        sym = doc.lr_symptom(run, cfg.training.learning_rate)
        if sym:
            cid = "learning_rate_too_high" if sym == "high" else "learning_rate_too_low"
            doc.cause(cid, f"loss {history[0]['loss']:.4g} -> {last['loss']:.4g} over "
                      f"{last['epoch']} epochs with median gradient norm "
                      f"{_median_grad(history):.3g} at learning rate "
                      f"{cfg.training.learning_rate:g}", 0.5, "history")
        if (cfg.model.dropout >= DOCTOR_THRESHOLDS["heavy_dropout"]
                or cfg.training.weight_decay >= DOCTOR_THRESHOLDS["heavy_weight_decay"]):
            doc.cause("over_regularized", f"dropout {cfg.model.dropout:g}, weight decay "
                      f"{cfg.training.weight_decay:g}", 0.5, "history")
        status = doc.failure_verdict(run)
    elif "val_spearman" in last and last["val_spearman"] <= THRESHOLDS["flag_spearman"]:
        doc.cause("no_signal", f"training Spearman {last['spearman']:.3f} but validation "
                  f"Spearman {last['val_spearman']:.3f}", 0.6, "history")
        status = "no_generalization"
    doc.add_stage("history", "passed" if verdict.passed else "failed",
                  {"records": len(history), **run.summary()}, t0)
    return DoctorReport(verdict=status, causes=doc.ranked() if status != "healthy" else [],
                        stages=doc.stages, notes=doc.notes,
                        runbook_verdict=verdict.to_dict(), setup={"source": "history"},
                        seconds=time.perf_counter() - t0)
