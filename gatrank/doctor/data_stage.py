"""The doctor's data stage: every manifest (or dataset) problem, rows the model survives left out
(a few, with a warning), targets that do not vary or are far from unit scale under a loss that is
not scale-invariant, pairs the loss cannot use, and node features that cannot tell graphs
apart."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch_geometric.data import Batch

from gatrank.checks.probes import eval_mode
from gatrank.checks.static import (
    check_graphs,
    feature_stats,
    pair_stats,
    target_scale_sensitivity,
)
from gatrank.doctor.report import DOCTOR_THRESHOLDS
from gatrank.doctor.runs import model_factory
from gatrank.doctor.state import Diagnosis
from gatrank.losses import make_loss_fn
from gatrank.model import adds_self_loops, reads_edge_attr, score_batch

__all__ = [
    "data_stage",
    "droppable",
]


_PROBLEM_CAUSE = {"nonfinite_features": "nan_or_inf_inputs",
                  "nonfinite_edge_features": "nan_or_inf_inputs",
                  "nan_target": "nan_or_inf_inputs", "inf_target": "nan_or_inf_inputs",
                  "missing_target": "nan_or_inf_inputs", "empty_graph": "empty_graphs",
                  "no_edges": "empty_graphs"}
"""The cause of each data problem code (any other code: ``invalid_data``)."""


TOLERABLE_FRACTION = DOCTOR_THRESHOLDS["tolerable_fraction"]
"""Rows with problems the model survives are left out when they are at most this fraction."""
TARGET_SCALE = DOCTOR_THRESHOLDS["target_scale"]
"""Targets with |mean| or std above this are far from unit scale."""
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
    small = 0 < std < DOCTOR_THRESHOLDS["target_scale_small"]
    if max(abs(mean), std) <= TARGET_SCALE and not small:
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
    name = "gatrank's pairwise loss" if builtin else f"your loss {doc.loss_name}"
    ratio = res["grad_norm_raw"] / res["grad_norm_standardized"] \
        if res["grad_norm_standardized"] > 0 else float("inf")
    far = (f"std below {DOCTOR_THRESHOLDS['target_scale_small']:g}" if small else
           f"|mean| or std above {TARGET_SCALE:g}")
    evidence = (f"targets far from unit scale: mean {mean:.4g}, std {std:.4g}, min "
                f"{float(y.min()):.4g}, max {float(y.max()):.4g} ({far}), and {name} is not "
                f"scale-invariant in them: at fixed scores "
                f"it is {res['loss_raw']:.4g} on these targets and "
                f"{res['loss_standardized']:.4g} on the same targets standardized, gradient "
                f"norm {res['grad_norm_raw']:.4g} against {res['grad_norm_standardized']:.4g} "
                f"({ratio:.3g}x; relative change {res['loss_change']:.3g} in the loss, "
                f"{res['grad_change']:.3g} in the gradient)")
    how = (f"Standardize the targets before training: y = (y - {mean:.4g}) / {std:.4g}"
           + (" (a loss whose optimum is scores = targets + c, as ListNet's, then asks for "
              "scores of unit spread instead of a tiny one). " if small else
              ", or log-transform concentrations such as IC50 in nM (pIC50 = 9 - "
              "log10(IC50)). "))
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
