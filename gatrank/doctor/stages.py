"""The doctor's checks that are not ablations: the loss and model stages (static checks that stop
the diagnosis when they find a definitive cause) and the held-out stage (a permutation test of
ranking on graphs the model never saw); the data stage is :mod:`~gatrank.doctor.data_stage`."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch_geometric.data import Batch

from gatrank.baselines import fit_baselines
from gatrank.checks.margins import margin_sentence
from gatrank.checks.probes import weight_kind
from gatrank.checks.static import (
    check_configured_loss,
    frozen_parameters,
    gradient_path,
)
from gatrank.checks.verdict import THRESHOLDS
from gatrank.doctor.report import CAUSES, DOCTOR_THRESHOLDS
from gatrank.doctor.runs import model_factory, train_run
from gatrank.doctor.state import Diagnosis
from gatrank.doctor.trace import signal_trace
from gatrank.losses import make_loss_fn
from gatrank.metrics import paired_bootstrap, pairwise_accuracy
from gatrank.runtime import resolve_device, set_seed
from gatrank.training import predict

__all__ = [
    "loss_stage",
    "model_stage",
    "heldout_stage",
    "HeldoutReading",
    "heldout_reading",
]


def loss_stage(doc: Diagnosis) -> bool:
    """The runbook's loss tests on synthetic scores; True (stop) when the loss is detached,
    ignores which score belongs to which target (a broadcast), or prefers the reversed
    order."""
    t0 = doc.begin("loss")
    fn = make_loss_fn(doc.loss or None, doc.cfg)
    with warnings.catch_warnings():  # what PyTorch warns is quoted by loss_pairing below
        warnings.simplefilter("ignore")
        res = check_configured_loss(fn, doc.cfg)
    summary = {k: res[k] for k in ("loss_perfect", "loss_reversed", "loss_constant",
                                   "grad_norm")}
    if not (res["requires_grad"] and res["has_gradient"]):
        why = ("the loss does not require grad" if not res["requires_grad"] else
               "its gradient with respect to the scores is missing or zero")
        doc.cause("loss_detached", f"on 16 synthetic graphs with distinct targets "
                  f"{why} (loss value {res['loss_constant']:.4g} at constant scores)",
                  1.0, "loss", grad_norm=res["grad_norm"])
    elif (pairing := loss_pairing(fn, doc.cfg))["ignores_pairing"]:
        summary["ignores_pairing"] = True
        said = (f"; PyTorch warned: {pairing['warnings'][0]}" if pairing["warnings"] else "")
        doc.cause("score_shape_mismatch",
                  f"the loss {doc.loss_name} is {pairing['loss']:.6g} for the perfect "
                  "ordering of 16 synthetic "
                  f"graphs and the same (within 1e-6) for {pairing['permutations']} random "
                  "permutations of the scores against their targets: it never pairs score i "
                  "with target i, which is what a [G] tensor combined with a [G, 1] one does "
                  f"(it broadcasts to [G, G], every score against every target){said}", 1.0,
                  "loss", fix=_BROADCAST_FIX, permutations=pairing["permutations"])
    elif not (res["prefers_correct_order"] and res["descent_agrees"]):
        doc.cause("loss_wrong_direction",
                  f"the perfect ordering costs {res['loss_perfect']:.4g} and its reverse "
                  f"{res['loss_reversed']:.4g}; a gradient step from constant scores "
                  f"{'moves towards' if res['descent_agrees'] else 'moves against'} the "
                  "target order", 1.0, "loss",
                  loss_perfect=res["loss_perfect"], loss_reversed=res["loss_reversed"])
    if not res["finite_large_gaps"]:
        doc.notes.append("the loss or its gradient is not finite at score gaps of 1e4: "
                         "compute it with softplus (stable) rather than log(1 + exp)")
    failed = bool({"loss_detached", "loss_wrong_direction", "score_shape_mismatch"}
                  & set(doc.causes))
    doc.add_stage("loss", "failed" if failed else "ok", summary, t0)
    return failed


_BROADCAST_FIX = ("Give the loss's two tensors the same shape before combining them: "
                  "scores.view(-1) and targets.view(-1) (or squeeze(-1) the [G, 1] one); "
                  "F.mse_loss(scores.unsqueeze(-1), targets) and (scores[:, None] - "
                  "targets) ** 2 broadcast to [G, G].")


def loss_pairing(fn, config, *, n: int = 16, permutations: int = 5) -> dict[str, Any]:
    """Whether a loss ``fn(scores, targets, group) -> LossOutput`` pairs each score with its
    target: its value at the perfect ordering against ``permutations`` random permutations of
    the scores (targets fixed, spaced beyond the configured eps). A loss that gives them all
    the same value does not look at which score goes with which target (a broadcast).

    Returns:
        ``{"ignores_pairing", "loss" (at the perfect ordering), "permutations", "warnings"
        (what PyTorch warned while computing it, e.g. about broadcasting target sizes)}``.
    """
    lc = config.loss
    gen = torch.Generator().manual_seed(config.training.seed)
    y = torch.randperm(n, generator=gen).double() * max(1.0, 2 * (lc.tie_eps + lc.margin_eps))
    z = ((y - y.mean()) / y.std()).float()

    def value(scores: torch.Tensor) -> float:
        return float(fn(scores, y.float(), None).loss.detach())

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        base = value(z)
        values = [value(z[torch.randperm(n, generator=gen)]) for _ in range(permutations)]
    same = all(abs(v - base) <= 1e-6 * max(1.0, abs(base)) for v in values)
    said = list(dict.fromkeys(" ".join(str(w.message).split()) for w in caught))
    return {"ignores_pairing": bool(same and math.isfinite(base)), "loss": base,
            "permutations": permutations, "warnings": said}


def model_stage(doc: Diagnosis, idx: Sequence[int]) -> bool:
    """Frozen parameters and the gradient path on the graphs ``idx`` (kept in ``doc.static``
    for the symptoms); True (stop) when nothing can be trained."""
    t0 = doc.begin("model")
    set_seed(doc.cfg.training.seed)
    net = model_factory(doc)(doc.gs.num_features, doc.cfg)
    frozen = frozen_parameters(net)
    batch = Batch.from_data_list([doc.gs[i] for i in idx])
    constant = constant_weights(net)
    # the first forward pass, hooked: where graph-to-graph variation dies at initialisation
    doc.trace_batch = batch
    doc.traces["init"] = signal_trace(net, batch)
    # scores that are not one per graph stop here, before any loss sees them
    path = gradient_path(net, make_loss_fn(doc.loss or None, doc.cfg), batch)
    doc.static = {"frozen": frozen, "path": path,
                  "numel": {n: p.numel() for n, p in net.named_parameters()}}
    summary = {"parameters": frozen["num_parameters"],
               "trainable_fraction": round(frozen["trainable_fraction"], 4),
               "grad_norm_at_init": path["grad_norm"], "unused": len(path["unused"]),
               "zero_grad": len(path["zero"])}
    stop = False
    trainable = [n for n, p in net.named_parameters() if p.requires_grad]
    if frozen["trainable_fraction"] == 0:
        doc.cause("frozen_parameters", f"all {len(frozen['frozen'])} parameter tensors "
                  "have requires_grad=False: nothing can be trained", 1.0, "model",
                  trainable_fraction=0.0)
        stop = True
    elif trainable and (not path["requires_grad"] or len(path["unused"]) == len(trainable)):
        doc.cause("loss_detached", "on a real batch the loss reaches none of the "
                  f"{len(trainable)} trainable parameter tensors (no gradient path from "
                  "the model's scores to the loss)", 1.0, "model")
        stop = True
    if constant and not stop:
        _init_cause(doc, constant)
    status = "failed" if stop else "ok"
    if not stop and path["requires_grad"] and (
            path["grad_norm"] < DOCTOR_THRESHOLDS["vanishing_grad_norm"]):
        # not a cause by itself (an untrained model can start flat), but worth a look
        status = "warning"
        doc.notes.append(
            f"at initialisation the gradient norm on a real batch is "
            f"{path['grad_norm']:.3g} (runbook: > {THRESHOLDS['grad_norm']:g}) and "
            f"{len(path['zero'])} parameter tensor(s) get exactly zero gradient: gradients "
            "barely reach the parameters before any training (dead or saturated units?)")
    doc.add_stage("model", status, summary, t0)
    return stop


def constant_weights(model: nn.Module) -> list[dict[str, Any]]:
    """The weight tensors (parameters of 2 or more dimensions) whose units start identical:
    every entry the same value (zeros, a constant), or every row (unit) the same. Identical
    units get identical gradients and stay identical; biases and normalization scales (1-D)
    start constant by design and are not listed.

    Returns:
        ``[{"name", "shape", "kind" ("all 0", "all 0.5", "identical rows"), "share" (of
        the entries of all weight tensors)}]``.
    """
    weights = [(n, p) for n, p in model.named_parameters() if p.dim() >= 2 and p.numel() >= 2]
    total = sum(p.numel() for _, p in weights) or 1
    return [{"name": name, "shape": list(p.shape), "kind": kind, "share": p.numel() / total}
            for name, p in weights if (kind := weight_kind(p))]


def _init_cause(doc: Diagnosis, constant: list[dict[str, Any]]) -> None:
    """``bad_initialization`` for weights that start constant: likely (0.9) when they are
    most of the model's weights, a suspicion (0.6) otherwise (a zero-initialised last layer
    is a deliberate choice some models make)."""
    share = sum(c["share"] for c in constant)
    named = ", ".join(f"{c['name']} ({'x'.join(map(str, c['shape']))}) {c['kind']}"
                      for c in constant[:4]) + (" ..." if len(constant) > 4 else "")
    doc.cause("bad_initialization",
              f"{len(constant)} weight tensor(s) start with identical units: {named} "
              f"({share:.0%} of the weights); identical units get identical gradients",
              0.9 if share >= 0.5 else 0.6, "model",
              fix=f"{CAUSES['bad_initialization']['fix']} Here: "
                  + ", ".join(c["name"] for c in constant[:4]) + ".",
              constant_weights=[c["name"] for c in constant], constant_share=share)


def heldout_stage(doc: Diagnosis) -> str:
    """The user's settings trained on as many training graphs as the stage's budget allows and
    scored on held-out ones; the verdict: ``healthy`` (above chance, weakly above it, or a
    sample too small to judge, each said in a note) or ``no_generalization`` (at chance where a
    baseline ranks, or where the baselines too are at chance on a sample large enough)."""
    t0 = doc.begin("held-out")
    doc.train_split()
    sp = doc.splits
    held = (sp.get("val", []) + sp.get("test", []))[: doc.opts.heldout_max]
    available = sp["train"]
    train_idx, budget = _heldout_train(doc, available)
    if len(held) < 8 or len(train_idx) < 8:
        doc.notes.append(f"held-out check skipped: {len(held)} held-out and "
                         f"{len(train_idx)} training graphs (needs 8 of each)")
        doc.add_stage("held-out", "skipped", {"held_out": len(held)}, t0)
        return "healthy"
    cfg = doc.user_cfg(**{"training.epochs": doc.opts.heldout_epochs})
    device = resolve_device(cfg.training.device)
    held_graphs = [doc.gs[i] for i in held]

    box: list[nn.Module] = []
    train_summary = train_run(doc, "held-out", cfg, train_idx, stop_on_pass=False,
                              keep=box, probe=False).summary()
    out = predict(box[-1], held_graphs, device)
    scores, targets = out["scores"].numpy(), out["targets"].numpy()
    stat, p = _signal_test(scores, targets, _groups(held_graphs), doc.cfg.loss.tie_eps,
                           doc.opts.permutations, doc.cfg.training.seed)
    summary = {"train_graphs": len(train_idx), "train_available": len(available),
               "held_out": len(held), "pairwise_accuracy": round(stat, 4),
               "p_value": round(p, 4),
               "train_pairwise_accuracy": train_summary.get("pairwise_accuracy")}
    used = (f"trained on {len(train_idx)} of the {len(available)} training graphs"
            + (f" (the stage's {doc.opts.heldout_seconds:g} s budget)" if budget else "")
            + f" for {doc.opts.heldout_epochs} epochs with your settings")
    against: list[dict[str, Any]] = []
    if p >= DOCTOR_THRESHOLDS["chance_p"]:  # at chance: would a baseline rank these graphs?
        against = _against_baselines(doc, train_idx, held, scores, targets, summary)
    reading = heldout_reading(p, against, train=len(train_idx), available=len(available),
                              held=len(held))
    doc.add_stage("held-out", reading.status, summary, t0)
    if reading.status == "ok":
        return "healthy"
    if reading.status == "weak":
        doc.notes.append(f"held-out ranking is above chance, but only weakly: pairwise accuracy "
                         f"{stat:.3f} on {len(held)} held-out graphs (permutation p = {p:.3g}), "
                         f"{used}; more training graphs or epochs give a clearer answer")
        return "healthy"
    fit = train_summary.get("pairwise_accuracy", float("nan"))
    n_fit = len(doc.train_split()[: doc.opts.n])  # the count the overfit test used
    base = (f"the model fits the {n_fit} graphs of the overfit test and reaches "
            f"pairwise accuracy {fit:.3f} on its {len(train_idx)} training graphs, but ranks "
            f"{len(held)} held-out graphs at chance: pairwise accuracy {stat:.3f} "
            f"(permutation p = {p:.3g}); {used}")
    said = "; ".join(a["text"] for a in against) or "no baseline could be fitted"
    if reading.status == "cannot judge":
        doc.notes.append(f"held-out ranking cannot be judged on this sample: {base}; no "
                         "baseline fitted to convergence on the same graphs ranks clearly "
                         f"above chance either ({said}), and {reading.why}. Judge "
                         "generalization on a full training run (gatrank train; 05_eval "
                         "compares it with the baselines)")
        return "healthy"
    if reading.cause == "does_not_generalize":
        doc.cause("does_not_generalize", f"{base}; {said}", 0.85, "held-out",
                  held_out_pairwise_accuracy=stat, p_value=p)
    else:
        doc.cause("no_signal", f"{base}; no baseline fitted to convergence on the same "
                  f"training graphs ranks clearly above chance either: {said}", 0.9,
                  "held-out", held_out_pairwise_accuracy=stat, p_value=p)
    return "no_generalization"


@dataclass
class HeldoutReading:
    """What a held-out stage's statistics allow it to say."""

    status: str
    """``ok`` (above chance), ``weak`` (p between the signal and chance thresholds),
    ``cannot judge`` or ``failed``."""
    cause: str = ""
    """``does_not_generalize`` or ``no_signal`` when ``failed``."""
    why: str = ""
    """Why the sample cannot judge."""


def heldout_reading(p: float, baselines: Sequence[Mapping[str, Any]], *, train: int,
                    available: int, held: int) -> HeldoutReading:
    """The held-out stage's words, following its statistics: p <= 0.01 is above chance,
    p < 0.05 only weakly so (never "at chance"); at chance, ``does_not_generalize`` where a
    baseline ranks the same graphs (p <= 0.01 over the baselines, Bonferroni), else
    ``no_signal`` only on a sample that can judge (every available training graph used, at
    least 128 of them and 64 held-out graphs) and where the model beats no baseline; otherwise
    the sample cannot judge.

    Args:
        p: the model's permutation p-value on the held-out graphs.
        baselines: ``{"name", "p", "lead"}`` of each baseline fitted (``lead``: the paired
            bootstrap of the model against it, with ``better``).
        train, available, held: training graphs used, training graphs there were, held-out
            graphs scored.
    """
    t = DOCTOR_THRESHOLDS
    if p <= t["signal_p"]:
        return HeldoutReading("ok")
    if p < t["chance_p"]:
        return HeldoutReading("weak")
    if any(b["p"] <= t["signal_p"] / len(baselines) for b in baselines):
        return HeldoutReading("failed", "does_not_generalize")
    beaten = [b["name"] for b in baselines if b["lead"]["better"]]
    if beaten:
        why = f"the model beats the {', '.join(beaten)} baseline by more than the noise"
    elif train < available:
        why = f"the stage used {train} of the {available} training graphs"
    elif train < t["judge_train"] or held < t["judge_heldout"]:
        why = (f"{train} training and {held} held-out graphs are too few to tell chance from a "
               f"weak signal (it needs {t['judge_train']:g} and {t['judge_heldout']:g})")
    else:
        return HeldoutReading("failed", "no_signal")
    return HeldoutReading("cannot judge", why=why)


def _heldout_train(doc: Diagnosis, available: Sequence[int]) -> tuple[list[int], bool]:
    """The held-out stage's training graphs: the first of ``available`` up to
    ``opts.heldout_train``, fewer where ``opts.heldout_seconds`` does not allow them at the
    overfit run's measured speed (seconds per graph and epoch, never under 64); and whether the
    time budget was what limited them."""
    cap = min(len(available), doc.opts.heldout_train)
    rb = doc.overfit_run
    if rb is None or not rb.history or rb.seconds <= 0:
        return list(available[:cap]), False
    # the overfit run is one full batch per epoch; smaller batches cost about twice per graph
    per_graph_epoch = 2 * rb.seconds / (rb.history[-1]["epoch"] * max(1, doc.opts.n))
    allowed = int(doc.opts.heldout_seconds / (doc.opts.heldout_epochs * per_graph_epoch))
    n = min(cap, max(allowed, 64))
    return list(available[:n]), n < cap


def _against_baselines(doc: Diagnosis, train_idx: Sequence[int], held: Sequence[int],
                       scores: np.ndarray, targets: np.ndarray, summary: dict) -> list[dict]:
    """The baselines of :func:`gatrank.baselines.fit_baselines` fitted on ``train_idx`` and
    judged on the held-out graphs as the model is (pairwise accuracy and its permutation
    p-value), with the model's Spearman lead over each (the paired bootstrap 05_eval reports);
    their figures go into the stage's ``summary``."""
    fitted = fit_baselines(doc.gs, {"train": list(train_idx)}, tie_eps=doc.cfg.loss.tie_eps,
                           seed=doc.cfg.training.seed)
    held_graphs = [doc.gs[i] for i in held]
    out = []
    for name, b in fitted.items():
        if b.skipped:
            continue
        bs = b.scores(held)
        stat, p = _signal_test(bs, targets, _groups(held_graphs), doc.cfg.loss.tie_eps,
                               doc.opts.permutations, doc.cfg.training.seed)
        lead = paired_bootstrap(scores, bs, targets, seed=doc.cfg.training.seed)
        summary.update({f"{name}_pairwise_accuracy": round(stat, 4),
                        f"{name}_p_value": round(p, 4),
                        f"{name}_lead_95": [round(lead["low"], 4), round(lead["high"], 4)]})
        out.append({"name": name, "p": p, "lead": lead, "text":
                    f"the {name} baseline reaches {stat:.3f} (p = {p:.3g}); the model "
                    f"{margin_sentence(name, lead)}"})
    return out


def _groups(graphs: Sequence) -> np.ndarray | None:
    if not all(hasattr(g, "group") for g in graphs):
        return None
    g = np.array([int(x.group.reshape(-1)[0]) for x in graphs])
    return None if (g < 0).all() else g


def _signal_test(scores: np.ndarray, targets: np.ndarray, groups: np.ndarray | None,
                 tie_eps: float, permutations: int, seed: int) -> tuple[float, float]:
    """Pairwise accuracy (mean over groups with groups) and its one-sided permutation p-value:
    the fraction of score shuffles (within groups) that rank at least as well, +1 smoothed."""
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
