"""The doctor's checks that are not ablations: the data, loss and model stages (static checks
that stop the diagnosis when they find a definitive cause) and the held-out stage (a permutation
test of ranking on graphs the model never saw)."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch_geometric.data import Batch

from gatrank.checks.probes import eval_mode
from gatrank.checks.static import (
    check_configured_loss,
    check_graphs,
    feature_stats,
    frozen_parameters,
    gradient_path,
    pair_stats,
    target_scale_sensitivity,
)
from gatrank.checks.verdict import THRESHOLDS
from gatrank.doctor.report import CAUSES, DOCTOR_THRESHOLDS
from gatrank.doctor.runs import model_factory, train_run
from gatrank.doctor.state import Diagnosis
from gatrank.doctor.trace import signal_trace
from gatrank.losses import make_loss_fn
from gatrank.metrics import pairwise_accuracy
from gatrank.model import adds_self_loops, reads_edge_attr, score_batch
from gatrank.runtime import resolve_device, set_seed
from gatrank.training import predict

__all__ = [
    "data_stage",
    "droppable",
    "loss_stage",
    "model_stage",
    "heldout_stage",
]


_PROBLEM_CAUSE = {"nonfinite_features": "nan_or_inf_inputs",
                  "nonfinite_edge_features": "nan_or_inf_inputs",
                  "nan_target": "nan_or_inf_inputs", "inf_target": "nan_or_inf_inputs",
                  "missing_target": "nan_or_inf_inputs", "empty_graph": "empty_graphs",
                  "no_edges": "empty_graphs"}
"""The cause of each data problem code (any other code: ``invalid_data``)."""


# to move to DOCTOR_THRESHOLDS as "tolerable_fraction" and "target_scale"
TOLERABLE_FRACTION = 0.05  # rows with problems the model survives, left out, at most
TARGET_SCALE = 100.0  # targets with |mean| or std above this are far from unit scale
UNLOADABLE = frozenset({
    "invalid_smiles", "unsupported_molecule", "empty_graph", "missing_file", "unreadable_file",
    "unsafe_file", "unknown_extension", "bad_graph_content", "missing_features", "not_a_graph",
    "bad_edge_index_shape", "edge_index_out_of_range", "non_integer_edge_index",
    "edge_attr_mismatch", "feature_width_mismatch", "edge_feature_width_mismatch"})
"""Problem codes of a row whose graph cannot be built at all: a few such rows are left out.
Never these: NaN/Inf/missing/non-numeric targets and NaN/Inf features (a broken column more
often than a broken row), ids, splits, groups, sources and manifest-level problems."""


def droppable(problems: Sequence, rows: int) -> bool:
    """Whether a manifest's or dataset's errors are all rows the data stage may leave out:
    each a row's problem (``per_graph``) that is :data:`UNLOADABLE` or ``no_edges`` (whether
    the model survives those, the data stage decides), on at most :data:`TOLERABLE_FRACTION`
    of the ``rows``. The doctor then loads the other rows instead of stopping."""
    errors = [p for p in problems if not p.is_warning]
    if not all(p.per_graph and p.code in UNLOADABLE | {"no_edges"} for p in errors):
        return False
    return len({(p.line, p.index) for p in errors}) <= TOLERABLE_FRACTION * rows


def data_stage(doc: Diagnosis, problems: Sequence, dropped: Sequence) -> bool:
    """Data checks; True when diagnosis must stop here.

    ``problems`` that the model survives, on at most :data:`TOLERABLE_FRACTION` of the rows,
    do not stop it (see :func:`_leave_out`): they are listed in a note, left out of ``doc.gs``
    and the stage is a ``warning``. Every other problem is a definitive cause.
    """
    t0 = time.perf_counter()
    errors = [p for p in problems if not p.is_warning]
    summary: dict[str, Any] = {}
    if errors and _leave_out(doc, errors, summary):
        errors = []
    counted = _problem_causes(doc, errors)
    if dropped:
        doc.notes.append(f"{len(dropped)} manifest row(s) or graph(s) were dropped under "
                         "data.on_error=skip; they are not part of this diagnosis")
    summary = {"graphs": 0 if doc.gs is None else len(doc.gs), "problems": counted, **summary}
    if counted or _target_causes(doc, summary):
        doc.add_stage("data", "failed", summary, t0)
        return True
    _scale_causes(doc, summary)
    stop = _feature_causes(doc, summary)
    warn = doc.causes or "dropped_rows" in summary
    doc.add_stage("data", "failed" if stop else "warning" if warn else "ok", summary, t0)
    return stop


def _leave_out(doc: Diagnosis, errors: Sequence, summary: dict[str, Any]) -> bool:
    """Leave out the rows of ``errors`` when the model survives them and they are at most
    :data:`TOLERABLE_FRACTION` of the rows; True when it did (a note names them and gives
    check-data's fix), else a note says why they stop the diagnosis.

    Survivable: a row whose graph cannot be built (:data:`UNLOADABLE`; the model never sees
    it), and a graph without edges for a model that survives one (:func:`_survives_edgeless`).
    Rows of a manifest or dataset that loading already left out (``per_graph`` problems) count
    beside ``doc.gs``; graphs in memory with problems are taken out of ``doc.gs``.
    """
    if any(not p.per_graph and p.file is not None for p in errors):
        return False  # a problem of the whole manifest or dataset
    absent = {(p.line, p.index) for p in errors if p.per_graph}
    inside = [i for i, g in enumerate(doc.gs.graphs)  # graphs in memory: checked one by one
              if any(not p.is_warning for p in check_graphs([g]))] \
        if doc.gs is not None and any(p.file is None for p in errors) else []
    bad, total = len(absent) + len(inside), len(absent) + (0 if doc.gs is None else len(doc.gs))
    if not bad:  # problems that name no graph here: as causes, as before
        return False
    codes = sorted({p.code for p in errors})
    never = sorted(set(codes) - UNLOADABLE - {"no_edges"})
    why = ""
    if never:
        why = f"problems of kind {', '.join(never)} are never left out"
    elif doc.gs is None or bad > TOLERABLE_FRACTION * total:  # _load loads the rest when not
        why = f"that is more than the {TOLERABLE_FRACTION:.0%} of rows the doctor leaves out"
    elif "no_edges" in codes:
        ok, reason = _survives_edgeless(doc, set(inside))
        why = "" if ok else reason
    rows = f"{bad} rows have problems ({', '.join(codes)})" if doc.gs is None else \
        f"{bad} of {total} rows ({bad / total:.1%}) have problems ({', '.join(codes)})"
    if why:
        doc.notes.append(f"{rows}: the diagnosis stops at the data: {why}")
        return False
    if inside:
        keep = sorted(set(range(len(doc.gs))) - set(inside))
        doc.gs = doc.gs.subset(keep)
    listed = []
    for code in codes:
        items = [p for p in errors if p.code == code]
        where = ", ".join(_where(p) for p in items[:10])
        more = f" and {len(items) - 10} more" if len(items) > 10 else ""
        listed.append(f"{len(items)} {code}: {where}{more} (fix: {items[0].fix})")
    doc.notes.insert(0, f"{rows} the model survives; they are left out of this diagnosis "
                        f"(at most {TOLERABLE_FRACTION:.0%} are) and gatrank check-data lists "
                        f"each one: {'; '.join(listed)}")
    summary.update(rows=total, dropped_rows=bad,
                   dropped_codes={c: sum(p.code == c for p in errors) for c in codes})
    return True


def _where(p) -> str:
    """A problem's row for a message: its id with its manifest line or dataset index."""
    return f"{p.id}" + (f" (line {p.line})" if p.line else
                        f" (index {p.index})" if p.index is not None else "")


def _survives_edgeless(doc: Diagnosis, skip: set[int]) -> tuple[bool, str]:
    """Whether the model survives a graph without edges, and why (on a throwaway instance).

    The rule: every message-passing layer adds self-loops (:func:`gatrank.model.adds_self_loops`;
    gatrank's GATConv does), so a node without edges attends to itself and its graph is scored
    from its features like any other; or the model's scores do not depend on edges at all (the
    same on up to 8 graphs with and without their edges: an MLP over pooled node features
    passes no messages). Anything else (a layer without self-loops, a model that raises on the
    graphs) is taken as not surviving: an edgeless graph may get a score that ignores its nodes.
    ``skip``: positions of ``doc.gs`` not to use as probes (the edgeless graphs themselves).
    """
    try:
        with torch.random.fork_rng(devices=[]):  # the later stages' draws stay as they were
            torch.manual_seed(doc.cfg.training.seed)
            net = model_factory(doc)(doc.gs.num_features, doc.cfg)
            if adds_self_loops(net):
                return True, "every message-passing layer of the model adds self-loops"
            probes = [doc.gs[i] for i in range(len(doc.gs)) if i not in skip][:8]
            bare = [g.edge_subgraph(torch.zeros(g.num_edges, dtype=torch.bool)) for g in probes]
            with eval_mode(net), torch.no_grad():
                with_edges = score_batch(net, Batch.from_data_list(probes))
                without = score_batch(net, Batch.from_data_list(bare))
    except Exception as exc:  # the user's code: whether it survives cannot be told
        return False, (f"building or running the model raised {type(exc).__name__}: {exc}, "
                       "so whether it survives graphs without edges cannot be told")
    if torch.allclose(with_edges, without, rtol=1e-5, atol=1e-6):
        return True, "the model's scores do not depend on edges"
    return False, ("the model does not add self-loops in every message-passing layer and its "
                   f"scores change when the edges of {len(probes)} graphs are removed (by up to "
                   f"{float((with_edges - without).abs().max()):.3g}): a graph without edges may "
                   "get a score that ignores its nodes")


def _problem_causes(doc: Diagnosis, problems: Sequence) -> int:
    """One definitive cause per problem code, naming the first rows; the problems counted
    (warnings do not count)."""
    by_code: dict[str, list] = {}
    for p in problems:
        if not p.is_warning:
            by_code.setdefault(p.code, []).append(p)
    for code, items in by_code.items():
        cid = _PROBLEM_CAUSE.get(code, "invalid_data")
        where = ", ".join(_where(p) for p in items[:5])
        more = f" and {len(items) - 5} more" if len(items) > 5 else ""
        doc.cause(cid, f"{len(items)} graph(s) with {code}: {items[0].problem} — {where}"
                       f"{more}", 1.0, "data", **{code: len(items)})
    return sum(map(len, by_code.values()))


def _target_causes(doc: Diagnosis, summary: dict[str, Any]) -> bool:
    """Targets that do not vary and pairs the loss cannot use, overall and per training batch;
    True when a definitive cause was found (no pair at all, constant targets)."""
    gs, lc = doc.gs, doc.cfg.loss
    idx = doc.train_split()
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
        doc.cause("no_valid_pairs", f"0 valid pairs: every one of the {len(sizes)} groups "
                  "has a single graph, and pairs form only inside a group", 1.0, "data",
                  valid_pairs=0, num_groups=len(sizes))
    elif tight == 0:
        doc.cause("constant_targets",
                  f"all {len(y)} targets are equal within 1e-6"
                  + (" inside every group" if grouped and spread > 1e-6 else "")
                  + f" (min {float(y.min()):.6g}, max {float(y.max()):.6g})",
                  1.0, "data", y_std=float(y.std()))
    elif every == 0:
        reasons = [f"loss.{k}={v:g} is at least the whole target spread ({spread:.4g})"
                   for k, v in (("tie_eps", lc.tie_eps), ("margin_eps", lc.margin_eps))
                   if v >= spread]
        doc.cause("no_valid_pairs", f"0 valid pairs among {len(y)} graphs: "
                  + ("; ".join(reasons) or "no two graphs of a group differ by more than "
                     f"tie_eps={lc.tie_eps:g} and margin_eps={lc.margin_eps:g}"),
                  1.0, "data", valid_pairs=0)
    if doc.causes:
        return True
    ties = 1 - tight / total_pairs
    summary["tie_fraction"] = round(ties, 4)
    if ties >= DOCTOR_THRESHOLDS["nearly_constant_ties"]:
        doc.cause("constant_targets", f"{ties:.1%} of target pairs are ties (within 1e-6): "
                  "the targets are nearly constant", 0.8, "data", tie_fraction=ties)
    gtr = None if group is None else group[idx]
    batches = pair_stats(y[idx], doc.cfg.training.batch_size, margin_eps=lc.margin_eps,
                         tie_eps=lc.tie_eps, group=gtr, seed=doc.cfg.training.seed)
    summary["batches_without_pairs"] = (f"{batches['batches_without_pairs']}/"
                                        f"{batches['batches']}")
    frac = batches["fraction_without_pairs"]
    if frac >= DOCTOR_THRESHOLDS["without_pairs"]:
        doc.cause("no_valid_pairs",
                  f"{batches['batches_without_pairs']} of {batches['batches']} training "
                  f"batches of {doc.cfg.training.batch_size} graphs have no valid pair "
                  f"(mean {batches['pairs_mean']:.1f} pairs per batch)",
                  0.5 + 0.4 * frac, "data", fraction_without_pairs=frac)
    return False


def _scale_causes(doc: Diagnosis, summary: dict[str, Any]) -> None:
    """``unscaled_targets`` (0.92, above ``exploding_gradients``' 0.9, which it causes; not
    definitive: the runs go on) for targets with |mean| or std above :data:`TARGET_SCALE`
    under a loss that is not scale-invariant in them
    (:func:`~gatrank.checks.static.target_scale_sensitivity` on the real targets)."""
    y = doc.gs.table["y"].to_numpy(dtype=np.float64)
    mean, std = float(y.mean()), float(y.std(ddof=1))
    summary["y_mean"] = mean
    if max(abs(mean), std) <= TARGET_SCALE:
        return
    try:
        res = target_scale_sensitivity(make_loss_fn(doc.loss or None, doc.cfg), y,
                                       seed=doc.cfg.training.seed)
    except Exception as exc:  # the user's loss: the loss stage runs it and reports it
        summary["target_scale"] = f"not measured: the loss raised {type(exc).__name__}"
        return
    summary["target_scale"] = "invariant" if res["invariant"] else "sensitive"
    if res["invariant"]:
        return
    lc, builtin = doc.cfg.loss, not doc.loss
    name = "gatrank's pairwise loss" if builtin else "your loss " + (
        doc.loss if isinstance(doc.loss, str) else getattr(doc.loss, "__name__", "(callable)"))
    ratio = res["grad_norm_raw"] / res["grad_norm_standardized"] \
        if res["grad_norm_standardized"] > 0 else float("inf")
    evidence = (f"targets far from unit scale: mean {mean:.4g}, std {std:.4g}, min "
                f"{float(y.min()):.4g}, max {float(y.max()):.4g} (|mean| or std above "
                f"{TARGET_SCALE:g}), and {name} is not scale-invariant in them: at fixed scores "
                f"it is {res['loss_raw']:.4g} on these targets and "
                f"{res['loss_standardized']:.4g} on the same targets standardized, gradient "
                f"norm {res['grad_norm_raw']:.4g} against {res['grad_norm_standardized']:.4g} "
                f"({ratio:.3g}x; relative change {res['loss_change']:.3g} in the loss, "
                f"{res['grad_change']:.3g} in the gradient)")
    how = (f"Standardize the targets before training: y = (y - {mean:.4g}) / {std:.4g}, or "
           "log-transform concentrations such as IC50 in nM (pIC50 = 9 - log10(IC50)). ")
    fix = how + (f"gatrank's pairwise loss depends on the targets' order only, except for "
                 f"loss.tie_eps={lc.tie_eps:g} and loss.margin_eps={lc.margin_eps:g}, which "
                 "are in target units: set them for the standardized targets; "
                 "loss.weight_by_diff weights pairs by |y_i - y_j| in target units too (a "
                 "log-transform changes which pairs dominate, standardizing does not)."
                 if builtin else
                 f"Y{name[1:]} changes with the targets' units, so its gradients are {ratio:.3g}x "
                 "those on standardized targets; or leave the loss to gatrank's pairwise "
                 "loss, which depends on the targets' order only.")
    doc.cause("unscaled_targets", evidence, 0.92, "data", fix=fix, y_mean=mean, y_std=std,
              y_min=float(y.min()), y_max=float(y.max()), loss_change=res["loss_change"],
              grad_change=res["grad_change"])


def _feature_causes(doc: Diagnosis, summary: dict[str, Any]) -> bool:
    """Graphs their node features and structure cannot tell apart; True when every node has
    the same features (definitive)."""
    gs = doc.gs
    with_edges = reads_edge_attr(doc.model)  # its forward takes edge_attr: edges count
    feats = feature_stats(gs.graphs, edge_features=with_edges)
    summary.update(indistinguishable=round(feats["indistinguishable"], 4),
                   constant_feature_columns=f"{feats['constant_columns']}/"
                                            f"{feats['num_features']}")
    if feats["identical_nodes"] and not with_edges:  # else edge features may tell them apart
        doc.cause("uninformative_features",
                  f"every node of all {len(gs)} graphs has the same feature vector (all "
                  f"{feats['num_features']} columns constant): a GAT with mean/max pooling "
                  "gives every graph the same embedding", 1.0, "data",
                  **{k: feats[k] for k in ("indistinguishable", "constant_columns")})
        return True
    if feats["indistinguishable"] >= DOCTOR_THRESHOLDS["indistinguishable"]:
        doc.cause("uninformative_features",
                  f"{feats['indistinguishable']:.0%} of graphs cannot be told from another "
                  "graph with a different target by features and structure (3 rounds of "
                  f"1-WL{' with edge features' if with_edges else ''}, the limit of message "
                  "passing; "
                  f"{feats['distinct_signatures']} distinct of {len(gs)})",
                  0.6 + 0.3 * feats["indistinguishable"], "data",
                  indistinguishable=feats["indistinguishable"])
    return False


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
                  f"the loss {_loss_name(doc.loss)} is {pairing['loss']:.6g} for the perfect "
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


def _loss_name(loss: Any) -> str:
    """How the report names the loss: its import string, its function name, or gatrank's."""
    if not loss:
        return "pairwise_rank_loss"
    return loss if isinstance(loss, str) else getattr(loss, "__name__", type(loss).__name__)


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
    out = []
    for name, p in weights:
        w = p.detach().reshape(p.shape[0], -1)
        first = float(w.reshape(-1)[0])
        kind = (f"all {first:g}" if bool((w == first).all()) else
                "identical rows" if w.shape[0] > 1 and bool((w == w[0]).all()) else "")
        if kind:
            out.append({"name": name, "shape": list(p.shape), "kind": kind,
                        "share": p.numel() / total})
    return out


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
    """The user's settings trained on more graphs and scored on held-out ones; the verdict:
    ``healthy`` (ranked above chance, or too few graphs to tell) or ``no_generalization``."""
    t0 = doc.begin("held-out")
    doc.train_split()
    sp = doc.splits
    train_idx = sp["train"][: doc.opts.heldout_train]
    held = (sp.get("val", []) + sp.get("test", []))[: doc.opts.heldout_max]
    if len(held) < 8 or len(train_idx) < 8:
        doc.notes.append(f"held-out check skipped: {len(held)} held-out and "
                         f"{len(train_idx)} training graphs (needs 8 of each)")
        doc.add_stage("held-out", "skipped", {"held_out": len(held)}, t0)
        return "healthy"
    cfg = doc.user_cfg(**{"training.epochs": doc.opts.heldout_epochs})
    device = resolve_device(cfg.training.device)
    held_graphs = [doc.gs[i] for i in held]

    def score(model) -> tuple[float, float, dict]:
        box: list[nn.Module] = []
        run = train_run(doc, "held-out" if model is None else f"held-out {model}", cfg, train_idx,
                        stop_on_pass=False, model=model, keep=box)
        out = predict(box[-1], held_graphs, device)
        stat, p = _signal_test(out["scores"].numpy(), out["targets"].numpy(),
                               _groups(held_graphs), doc.cfg.loss.tie_eps,
                               doc.opts.permutations, doc.cfg.training.seed)
        return stat, p, run.summary()

    stat, p, train_summary = score(None)
    summary = {"train_graphs": len(train_idx), "held_out": len(held),
               "pairwise_accuracy": round(stat, 4), "p_value": round(p, 4),
               "train_pairwise_accuracy": train_summary.get("pairwise_accuracy")}
    if p <= DOCTOR_THRESHOLDS["signal_p"]:
        doc.add_stage("held-out", "ok", summary, t0)
        return "healthy"
    lin_stat, lin_p, _ = score("linear")
    summary.update(linear_pairwise_accuracy=round(lin_stat, 4), linear_p_value=round(lin_p, 4))
    doc.add_stage("held-out", "failed", summary, t0)
    fit = train_summary.get("pairwise_accuracy", float("nan"))
    base = (f"the model fits the {doc.opts.n} graphs of the overfit test and reaches "
            f"pairwise accuracy {fit:.3f} on {len(train_idx)} training graphs, but ranks "
            f"{len(held)} held-out graphs at chance: pairwise accuracy {stat:.3f} "
            f"(permutation p = {p:.3g})")
    if lin_p <= DOCTOR_THRESHOLDS["signal_p"]:
        doc.cause("does_not_generalize", f"{base}; the linear baseline reaches "
                  f"{lin_stat:.3f} (p = {lin_p:.3g})", 0.85, "held-out",
                  held_out_pairwise_accuracy=stat, p_value=p)
    else:
        doc.cause("no_signal", f"{base}; the linear baseline is at chance too "
                  f"({lin_stat:.3f}, p = {lin_p:.3g})", 0.9, "held-out",
                  held_out_pairwise_accuracy=stat, p_value=p)
    return "no_generalization"


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
