"""The checks behind the notebooks: pure functions from graphs, configs and histories to data.

Each runbook step's measurements live here so that notebooks stay thin and the suite, tests and
users can run them without a notebook:

- Step 2B (data): :func:`data_checks` with :func:`duplicate_graphs`, :func:`degrees` and, from
  :mod:`gatrank.checks.static`, ``feature_table`` and ``valid_pairs_per_batch``.
- Step 2A (loss): :func:`loss_tests`, :func:`loss_gap_curves`, :func:`init_loss_per_batch`.
- Step 3 and the enhanced evaluation: :func:`training_checks`, :func:`evaluation_checks`.

A check is a dict ``{name, kind, rule, value, ok[, detail]}``: a
:class:`gatrank.checks.verdict.Check` as results files record it; ``kind`` is ``pass`` (a
criterion: the step fails without it), ``red_flag`` (``ok`` means the flag is not raised) or
``warning`` (reported, never fails). The runbook's rules and the pass/fail label are
:mod:`gatrank.checks.verdict`'s (``summarize_checks`` is re-exported here for the notebooks).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch_geometric.loader import DataLoader

from gatrank.checks.margins import margin_sentence
from gatrank.checks.static import (
    check_configured_loss,
    feature_table,
    valid_pairs_per_batch,
    wl_signatures,
)
from gatrank.checks.verdict import (
    Check,
    runbook_check,
    step3_checks,
    summarize_checks,
)
from gatrank.config import Config
from gatrank.data import CheckReport, GraphSet, check_dataset, check_manifest, split_indices
from gatrank.losses import LN2, make_loss_fn
from gatrank.model import build_model, reads_edge_attr, score_batch
from gatrank.runtime import set_seed

__all__ = [
    "check",
    "summarize_checks",
    "duplicate_graphs",
    "degrees",
    "DataChecks",
    "data_checks",
    "loss_tests",
    "loss_gap_curves",
    "init_loss_per_batch",
    "init_loss_checks",
    "embedding_check",
    "training_checks",
    "evaluation_checks",
]

_NAN_CODES = frozenset({"nan_target", "inf_target", "nonfinite_features",
                        "nonfinite_edge_features"})
"""Problem codes of :mod:`gatrank.data` that mean NaN/Inf in the input."""
_EMPTY_CODES = frozenset({"empty_graph", "no_edges"})


def check(name: str, kind: str, rule: str, value: float | int | None, ok: bool,
          detail: str = "") -> dict[str, Any]:
    """One result check as the dict a results file records (see
    :class:`~gatrank.checks.verdict.Check`; ``kind``: ``pass``, ``red_flag`` or ``warning``)."""
    return Check(name, kind, rule, value, ok, detail).to_dict()


# --------------------------------------------------------------------------- Step 2B: data


def duplicate_graphs(graphs: Sequence[Any], table: pd.DataFrame, *,
                     tie_eps: float = 1e-6, edge_features: bool = False) -> pd.DataFrame:
    """Groups of graphs the model cannot tell apart: equal node features and structure up to
    3 rounds of 1-WL (:func:`gatrank.checks.static.wl_signatures`; edge features, which
    gatrank's GAT does not read, count only with ``edge_features``).

    Returns one row per group of two or more: ids, y values, y_range, and ``conflicting``
    (targets differ by more than ``tie_eps``: no model can order such pairs).
    """
    hashes = pd.Series(wl_signatures(graphs, edge_features=edge_features).numpy())
    rows = []
    for _, idx in hashes.groupby(hashes).groups.items():
        if len(idx) < 2:
            continue
        ys = table["y"].iloc[list(idx)].to_numpy(dtype=float)
        rows.append({"size": len(idx), "ids": ", ".join(table["id"].iloc[list(idx)].astype(str)),
                     "y": ", ".join(f"{v:.4g}" for v in ys), "y_range": float(np.ptp(ys)),
                     "conflicting": bool(np.ptp(ys) > tie_eps)})
    return pd.DataFrame(rows, columns=["size", "ids", "y", "y_range", "conflicting"])


def degrees(graphs: Sequence[Any]) -> np.ndarray:
    """Out-degree of every node of every graph (from ``edge_index``), concatenated."""
    return np.concatenate([np.bincount(g.edge_index[0].numpy(), minlength=g.num_nodes)
                           for g in graphs]) if len(graphs) else np.zeros(0, dtype=int)


@dataclass
class DataChecks:
    """Everything 01_data_checks shows; ``checks`` is what it records."""

    checks: list[dict[str, Any]]
    samples: pd.DataFrame
    """Per-sample table: id, y, split, group, num_nodes, num_edges, smiles/path."""
    problems: pd.DataFrame
    """Every problem of the manifest (line, id, file, problem, fix, code; a dataset's: index in
    place of line)."""
    features: pd.DataFrame
    duplicates: pd.DataFrame
    degrees: np.ndarray
    valid_pairs: np.ndarray
    summary: dict[str, Any]

    def summary_table(self) -> pd.DataFrame:
        """The summary indexed by quantity; nested statistics flattened with dots."""
        rows = []
        for key, value in self.summary.items():
            if isinstance(value, Mapping):
                rows += [(f"{key}.{k}", v) for k, v in value.items()]
            else:
                rows.append((key, value))
        table = pd.DataFrame(rows, columns=["quantity", "value"]).set_index("quantity")
        table["value"] = [f"{v:.4g}" if isinstance(v, float) else v for v in table["value"]]
        return table


def _train_indices(gs: GraphSet, cfg: Config) -> list[int]:
    """The training split, as :func:`gatrank.training.train` draws it from the config."""
    return split_indices(gs, seed=cfg.training.seed, val_fraction=cfg.data.val_fraction,
                         test_fraction=cfg.data.test_fraction)["train"]


def _data_rules(report: CheckReport, gs: GraphSet, feats: pd.DataFrame, pairs: np.ndarray,
                n_conflict: int, bs: int) -> list[dict[str, Any]]:
    """The Step 2B checks, in the order notebook 01 shows them."""
    codes = [p.code for p in report.problems]
    n_nan = sum(c in _NAN_CODES for c in codes)
    n_empty = sum(c in _EMPTY_CODES for c in codes)
    dtype_ok = all(g.y.dtype == torch.float32 and tuple(g.y.shape) == (1,) for g in gs.graphs)
    n_const = int(feats["constant"].sum())
    y = gs.table["y"].to_numpy(dtype=float)
    y_std = float(np.std(y)) if len(y) else 0.0
    tie = report.summary.get("tie_fraction")
    return [
        check("rows_load", "pass", "every manifest row loads (error-level problems)",
              len(report.errors), report.ok,
              "; ".join(sorted(set(p.code for p in report.errors)))),
        check("no_nan_inf", "pass", "no NaN/Inf in node features, edge features or targets",
              n_nan, n_nan == 0),
        check("no_empty_graphs", "pass", "every graph has nodes and edges", n_empty,
              n_empty == 0),
        check("targets_float32", "pass", "y is float32 of shape [1] in every graph", len(gs),
              dtype_ok),
        check("targets_vary", "pass", "targets vary (std of y > 0)", y_std, y_std > 0),
        check("features_vary", "pass", "node features vary (non-constant features)",
              len(feats) - n_const, n_const < len(feats)),
        check("valid_pairs_per_batch", "pass",
              f"every training batch of {bs} has valid pairs (min per batch)",
              int(pairs.min()) if len(pairs) else 0, len(pairs) > 0 and int(pairs.min()) > 0),
        check("tie_fraction", "warning", "tied target pairs (|dy| <= tie_eps) below half",
              tie, tie is None or tie < 0.5),
        check("duplicate_conflicts", "warning",
              "no identical graphs with different targets (graphs in such groups)",
              n_conflict, n_conflict == 0),
    ]


def data_checks(graphs: GraphSet, config: Config, report: CheckReport | None = None, *,
                model: str = "") -> DataChecks:
    """The runbook's Step 2B checks on loaded graphs and their manifest's (or dataset's) check
    report.

    Args:
        graphs: a :class:`gatrank.data.GraphSet` (loaded with ``on_error="skip"`` so that a
            manifest with bad rows can still be inspected).
        config: batch size, eps and split settings come from here.
        report: a :class:`gatrank.data.CheckReport` of ``graphs.manifest`` or
            ``graphs.dataset`` (computed if None).
        model: the model's import string; when its ``forward`` takes ``edge_attr``, graphs
            that differ only in edge features are not duplicates.
    """
    gs, cfg = graphs, config
    if report is None:
        report = (check_dataset(gs.dataset) if gs.dataset else
                  check_manifest(gs.manifest, allow_outside_root=cfg.data.allow_outside_root))
    problems = pd.DataFrame([asdict(p) for p in report.problems],
                            columns=["index" if gs.dataset else "line", "id", "file", "problem",
                                     "fix", "code"])
    cols = [c for c in ("index", "id", "y", "split", "group", "num_nodes", "num_edges", "smiles",
                        "path") if c in gs.table and gs.table[c].notna().any()]
    feats = feature_table(gs.graphs)
    dups = duplicate_graphs(gs.graphs, gs.table, tie_eps=cfg.loss.tie_eps,
                            edge_features=reads_edge_attr(model))
    y = gs.table["y"].to_numpy(dtype=float)
    groups = torch.cat([g.group for g in gs.graphs]).numpy()
    train_idx = _train_indices(gs, cfg)
    bs = cfg.training.batch_size
    pairs = valid_pairs_per_batch(y[train_idx], bs, group=groups[train_idx],
                                  margin_eps=cfg.loss.margin_eps, tie_eps=cfg.loss.tie_eps,
                                  seed=cfg.training.seed)
    n_conflict = int(dups.loc[dups["conflicting"], "size"].sum()) if len(dups) else 0
    summary = {
        "num_rows": report.summary.get("num_rows"),
        "num_graphs": len(gs),
        "num_features": gs.num_features,
        "num_problems": len(report.problems),
        "tie_fraction": report.summary.get("tie_fraction"),
        "y": {"min": float(y.min()), "mean": float(y.mean()), "std": float(np.std(y)),
              "max": float(y.max())} if len(y) else None,
        "constant_features": int(feats["constant"].sum()),
        "duplicate_groups": len(dups),
        "graphs_in_conflicting_duplicates": n_conflict,
        "batch_size": bs,
        "valid_pairs_per_batch": {"min": int(pairs.min()), "mean": float(pairs.mean()),
                                  "max": int(pairs.max()), "batches": len(pairs),
                                  "without_pairs": int((pairs == 0).sum())} if len(pairs) else None,
    }
    return DataChecks(checks=_data_rules(report, gs, feats, pairs, n_conflict, bs),
                      samples=gs.table[cols].copy(), problems=problems, features=feats,
                      duplicates=dups, degrees=degrees(gs.graphs), valid_pairs=pairs,
                      summary=summary)


# --------------------------------------------------------------------------- Step 2A: loss


def _run_loss_test(name: str, rule: str, fn: Callable[[], tuple[float, bool, str]]) -> dict:
    try:
        value, ok, detail = fn()
    except Exception as exc:  # noqa: BLE001 - a failing user loss is a result, not a crash
        return check(name, "pass", rule, None, False, f"raised {type(exc).__name__}: {exc}")
    return check(name, "pass", rule, value, ok, detail)


_SELF_TESTS = {
    "gradients_exist": "gradients exist (norm of d loss / d scores > 0)",
    "perfect_vs_reversed": "perfect ordering has a lower loss than reversed",
    "large_gaps_finite": "huge score gaps give a finite loss and gradients",
    "constant_is_ln2": "a constant model has loss ln 2",
}
"""The loss tests read from :func:`gatrank.checks.static.check_loss`, with their rules."""


def _self_test_checks(fn: Callable, config: Config) -> dict[str, dict[str, Any]]:
    """Notebook 02's view of the doctor's loss self-test, one check per test it runs."""
    try:  # the test exactly as the doctor's loss stage runs it
        res = check_configured_loss(fn, config)
    except Exception as exc:  # noqa: BLE001 - a failing user loss is a result, not a crash
        why = f"raised {type(exc).__name__}: {exc}"
        return {name: check(name, "pass", rule, None, False, why)
                for name, rule in _SELF_TESTS.items()}
    gn, perfect, reverse = res["grad_norm"], res["loss_perfect"], res["loss_reversed"]
    values = {
        "gradients_exist": (gn, res["has_gradient"] and math.isfinite(gn),
                            f"{res['num_pairs']} valid pairs at constant scores"
                            if res["requires_grad"] else
                            "loss.requires_grad is False: the loss is detached from the scores"),
        "perfect_vs_reversed": (reverse - perfect, res["prefers_correct_order"],
                                f"perfect {perfect:.4f}, reversed {reverse:.4f}"),
        "large_gaps_finite": (res["loss_large_gaps"], res["finite_large_gaps"],
                              "right and reversed order, scores 1e4 x the standardized targets"),
        "constant_is_ln2": (res["loss_constant"], abs(res["loss_constant"] - LN2) < 1e-5,
                            f"ln 2 = {LN2:.6f}"),
    }
    return {name: check(name, "pass", _SELF_TESTS[name], *values[name]) for name in values}


def loss_tests(loss: str | Callable | None, config: Config) -> list[dict[str, Any]]:
    """The runbook's loss tests, run against the configured loss (gatrank's or the user's).

    From :func:`gatrank.checks.static.check_loss` (the doctor's self-test, on 16 distinct
    synthetic targets): gradients exist at constant scores; a perfect ordering scores lower
    than its reverse; large score gaps stay finite; for gatrank's loss, a constant model scores
    ln 2. Here: tied targets are ignored (swapping tied items' scores leaves the loss
    unchanged); a batch without valid pairs still gives a finite loss with a gradient path;
    for gatrank's loss, temperature T equals dividing the scores by T.
    """
    fn = make_loss_fn(loss, config)
    self_tests = _self_test_checks(fn, config)

    def ties() -> tuple[float, bool, str]:
        t = torch.tensor([0.0, 1.0, 1.0, 2.0])
        s = torch.tensor([0.3, 2.0, -1.0, 0.5])
        a = float(fn(s, t, None).loss)
        b = float(fn(s[[0, 2, 1, 3]], t, None).loss)
        return abs(a - b), abs(a - b) <= 1e-6 * max(1.0, abs(a)), "tied items' scores swapped"

    def no_pairs() -> tuple[float, bool, str]:
        s = torch.randn(6, generator=torch.Generator().manual_seed(1), requires_grad=True)
        out = fn(s, torch.ones(6), None)
        value = float(out.loss.detach())
        if not out.loss.requires_grad:
            return value, False, "no gradient path when a batch has no valid pairs"
        out.loss.backward()
        finite = math.isfinite(value) and bool(torch.isfinite(s.grad).all())
        return value, finite, f"{out.num_pairs} valid pairs; backward() ok"

    tests = [
        self_tests["gradients_exist"],
        self_tests["perfect_vs_reversed"],
        _run_loss_test("ties_ignored", "tied targets are ignored (loss change when swapped)",
                       ties),
        _run_loss_test("no_valid_pairs", "no valid pairs: finite loss with a gradient path",
                       no_pairs),
        self_tests["large_gaps_finite"],
    ]
    if not loss:  # gatrank's loss: its temperature and its value at constant scores are known
        tests += [_temperature_test(config), self_tests["constant_is_ln2"]]
    return tests


def _temperature_test(config: Config) -> dict[str, Any]:
    """gatrank's loss at temperature T equals the loss at T = 1 of the scores divided by T."""
    t = config.loss.temperature * 2.0
    hot = make_loss_fn(None, config.updated({"loss.temperature": t}))
    base = make_loss_fn(None, config.updated({"loss.temperature": 1.0}))
    y = torch.arange(8, dtype=torch.float32)

    def temperature() -> tuple[float, bool, str]:
        s = torch.randn(8, generator=torch.Generator().manual_seed(2))
        a, b = float(hot(s, y, None).loss), float(base(s / t, y, None).loss)
        return abs(a - b), abs(a - b) < 1e-5, f"temperature {t:g} vs scores / {t:g}"

    return _run_loss_test("temperature", "temperature T equals dividing scores by T "
                          "(loss difference)", temperature)


def loss_gap_curves(loss: str | Callable | None, config: Config, *,
                    temperatures: Sequence[float] = (0.5, 1.0, 2.0),
                    gaps: np.ndarray | None = None) -> pd.DataFrame:
    """Loss and d loss / d s_hi for one pair (y_hi > y_lo) as the score gap s_hi - s_lo varies.

    For gatrank's loss one curve per temperature; for a user loss one curve (``your loss``).
    Returns columns gap, loss, grad, label.
    """
    gaps = np.linspace(-8, 8, 161) if gaps is None else np.asarray(gaps, dtype=float)
    variants: list[tuple[str, Any]]
    if loss:
        variants = [("your loss", make_loss_fn(loss, config))]
    else:
        variants = [(f"T = {t:g}", make_loss_fn(None, config.updated({"loss.temperature": t})))
                    for t in temperatures]
    y = torch.tensor([1.0, 0.0])
    rows = []
    for label, fn in variants:
        for gap in gaps:
            s = torch.tensor([float(gap), 0.0], requires_grad=True)
            out = fn(s, y, None)
            grad = torch.autograd.grad(out.loss, s, allow_unused=True)[0] \
                if out.loss.requires_grad else None
            rows.append({"gap": float(gap), "loss": float(out.loss.detach()),
                         "grad": float(grad[0]) if grad is not None else 0.0, "label": label})
    return pd.DataFrame(rows)


@torch.no_grad()
def init_loss_per_batch(graphs: GraphSet, config: Config, *, model: str = "",
                        loss: str | Callable | None = None, max_batches: int = 30) -> pd.DataFrame:
    """The configured loss of the untrained model (eval mode) on real training batches.

    A model at initialisation should score close to a constant model, whose loss is ``ln 2``
    for gatrank's loss; far above means the initial scores are large and badly ordered.
    Returns one row per batch: batch, loss, num_pairs, score_std, size.
    """
    cfg, gs = config, graphs
    set_seed(cfg.training.seed)
    idx = _train_indices(gs, cfg)
    net = build_model(gs.num_features, cfg.model, model, edge_dim=gs.edge_dim)
    net.eval()
    fn = make_loss_fn(loss or None, cfg)
    loader = DataLoader([gs[i] for i in idx], batch_size=cfg.training.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(cfg.training.seed))
    rows = []
    for b, batch in enumerate(loader):
        if b >= max_batches:
            break
        scores = score_batch(net, batch)
        group = batch.group if bool((batch.group >= 0).any()) else None
        out = fn(scores, batch.y.reshape(-1), group)
        rows.append({"batch": b, "loss": float(out.loss), "num_pairs": out.num_pairs,
                     "score_std": float(scores.std(unbiased=False)), "size": int(batch.num_graphs)})
    return pd.DataFrame(rows, columns=["batch", "loss", "num_pairs", "score_std", "size"])


def init_loss_checks(init: pd.DataFrame, *, builtin: bool = True) -> list[dict[str, Any]]:
    """Checks on :func:`init_loss_per_batch`: every batch has valid pairs, and (a warning) the
    mean loss at initialisation is within 25% of ln 2, the loss of a constant model (only for
    gatrank's loss, whose scale is known)."""
    pairs_min = int(init["num_pairs"].min()) if len(init) else 0
    out = [check("init_batches_have_pairs", "pass",
                 "every real batch has valid pairs (min per batch)", pairs_min, pairs_min > 0)]
    if builtin and len(init):
        mean = float(init["loss"].mean())
        out.append(check("init_loss_near_ln2", "warning",
                         f"mean loss at initialisation within 25% of ln 2 = {LN2:.4f}", mean,
                         abs(mean - LN2) <= 0.25 * LN2))
    return out


def embedding_check(history: Sequence[Mapping[str, Any]], threshold: float = 0.01
                    ) -> dict[str, Any]:
    """Step 2C: pooled graph embeddings vary across graphs (``emb_graph_std`` of the last
    logged epoch > ``threshold``). A history without it (a model without ``embed()``, a log of
    a :class:`gatrank.Monitor`) gets a warning that it was not measured, not a failure."""
    last = history[-1] if history else {}
    value = last.get("emb_graph_std")
    return check("embedding_spread", "pass" if value is not None else "warning",
                 f"graph embeddings vary: std across graphs > {threshold} (Step 2C)", value,
                 value is not None and value > threshold,
                 "" if value is not None else "not measured: the model has no embed() method, "
                 "or the log has no emb_graph_std")


# --------------------------------------------------------------------------- Steps 3 and eval


def training_checks(history: Sequence[Mapping[str, Any]], summary: Mapping[str, Any]
                    ) -> list[dict[str, Any]]:
    """Step 3's monitoring on a full-training history: validation score std > 0.1, validation
    pairwise accuracy improved, gradient norms > 0.01 (median), the best checkpoint saved, and
    (a warning) the model beats the linear baseline on test Spearman."""
    if not history:
        raise ValueError("training logged no epoch; check training.epochs and log_every")
    best = next((h for h in history if h["epoch"] == summary.get("best_epoch")), history[-1])
    checks = [c.to_dict() for c in step3_checks(history, best)]
    test = summary.get("test") or {}
    base = (summary.get("baseline") or {}).get("test") or {}
    if test and base:
        diff = test["spearman"] - base["spearman"]
        checks.append(check("beats_linear_baseline", "warning",
                             "test Spearman above the linear baseline's (difference)", diff,
                             diff > 0))
    return checks


def evaluation_checks(metrics: Mapping[str, float], baselines: Mapping[str, Mapping[str, float]],
                      margins: Mapping[str, Mapping[str, Any]] | None = None
                      ) -> list[dict[str, Any]]:
    """Checks on held-out metrics: score std > 0.1 (not collapsed), the runbook's red flags, the
    model against the constant and random baselines, and (warnings) against each fitted
    baseline: given ``margins`` (:func:`gatrank.metrics.paired_bootstrap` per baseline), a lead
    larger than the noise (the 95% interval of the Spearman difference above 0); without them,
    a higher Spearman than the linear baseline's."""
    pa, sp, std = metrics["pairwise_accuracy"], metrics["spearman"], metrics["score_std"]
    checks = [c.to_dict() for c in (
        runbook_check("score_std", std, note="not collapsing to constant"),
        runbook_check("pairwise_accuracy_random", pa),
        runbook_check("spearman_none", sp),
        runbook_check("score_collapsed", std),
    )]
    for name in ("constant", "random"):
        if name in baselines:
            d = pa - baselines[name]["pairwise_accuracy"]
            checks.append(check(f"beats_{name}", "pass",
                                f"pairwise accuracy above the {name} baseline (difference)", d,
                                d > 0))
    if margins:
        for name, m in margins.items():
            checks.append(check(f"beats_{name}", "warning",
                                f"Spearman lead over the {name} baseline beyond the noise "
                                f"(lower end of its {m['level']:.0%} bootstrap interval)",
                                m["low"], m["better"], margin_sentence(name, m)))
    elif "linear" in baselines:
        d = sp - baselines["linear"]["spearman"]
        checks.append(check("beats_linear", "warning",
                            "Spearman above the linear baseline (difference)", d, d > 0))
    return checks

