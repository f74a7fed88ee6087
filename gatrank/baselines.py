"""Reference baselines, each fitted to convergence: what a graph ranker has to beat before it has
learned anything worth its cost.

- ``linear``: the runbook's "simpler baseline (linear model)": mean-pooled input node features
  (standardized on the training graphs) -> one score, fitted with the same pairwise logistic
  (RankNet) loss the GAT trains with plus an L2 penalty. The objective is convex, so it is
  solved by L-BFGS to a gradient tolerance, and the fit no longer depends on the GAT's learning
  rate or epoch budget; the L2 strength is chosen on the validation split.
- ``fingerprint``: what a medicinal chemist reaches for first: Morgan count fingerprints (RDKit,
  radius 2, 2,048 bits) -> ridge regression (scikit-learn), the regularization chosen on the
  validation split. Only where the graphs come from SMILES.
- ``fingerprint_rf``: a random forest (scikit-learn) on the same fingerprints, the other
  cheminformatics default; opt-in (:data:`ALL`), a few seconds on a thousand molecules.

:func:`fit_baselines` fits them on the training positions of a :class:`GraphSet` and returns
:class:`Baseline` objects that score any positions and say how they were fitted (regularization,
validation Spearman, iterations, convergence, fit time), or why one was skipped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize
from scipy.special import expit

from gatrank.metrics import spearman

__all__ = ["Baseline", "fit_baselines", "pooled_features", "morgan_fingerprints", "DEFAULT",
           "ALL", "LINEAR_L2_GRID", "RIDGE_ALPHA_GRID", "MAX_PAIRS"]

logger = logging.getLogger(__name__)

DEFAULT = ("linear", "fingerprint")
"""The baselines fitted unless others are asked for (a second or two on the embedded data)."""
ALL = ("linear", "fingerprint", "fingerprint_rf")

LINEAR_L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
"""L2 strengths tried for the linear baseline (on standardized features)."""
RIDGE_ALPHA_GRID = (0.1, 1.0, 10.0, 100.0, 1000.0)
"""Ridge regularizations tried for the fingerprint baseline."""
MAX_PAIRS = 20_000
"""Training pairs the linear baseline's pairwise loss uses at most (a seeded sample beyond):
more pairs than features by orders of magnitude, and the fit stays under a second."""
MORGAN_RADIUS, MORGAN_BITS = 2, 2048
RF_TREES = 200


@dataclass
class Baseline:
    """A fitted baseline (or one that could not be fitted: ``skipped`` says why)."""

    name: str
    info: dict[str, Any] = field(default_factory=dict)
    """How it was fitted: ``model``, the regularization chosen and the grid's validation
    Spearman, ``fit_s``, and for the linear baseline ``iterations``, ``converged``,
    ``grad_norm`` and ``tol``."""
    skipped: str = ""
    _features: np.ndarray | None = None
    _predict: Any = None

    def scores(self, idx: Sequence[int]) -> np.ndarray:
        """Scores of the graphs at positions ``idx`` (higher = ranked higher)."""
        if self.skipped:
            raise ValueError(f"the {self.name} baseline was skipped: {self.skipped}")
        return np.asarray(self._predict(self._features[np.asarray(idx, dtype=np.int64)]),
                          dtype=np.float64).reshape(-1)


# --------------------------------------------------------------------------- features


def pooled_features(gs) -> np.ndarray:
    """``[G, F]``: each graph's mean node feature vector (what the linear baseline reads)."""
    rows = []
    for g in gs.graphs:
        x = g.x.double() if g.x is not None else None
        rows.append(x.mean(0).numpy() if x is not None and len(x) else
                    np.zeros(gs.num_features))
    return np.vstack(rows) if rows else np.zeros((0, gs.num_features))


def morgan_fingerprints(smiles: Sequence[str]) -> tuple[np.ndarray, list[int]]:
    """Morgan count fingerprints ``[len(smiles), MORGAN_BITS]`` (radius :data:`MORGAN_RADIUS`)
    and the positions whose SMILES RDKit could not parse (their rows stay zero)."""
    from rdkit import Chem, RDLogger  # deferred: only this baseline needs RDKit here
    from rdkit.Chem import rdFingerprintGenerator

    RDLogger.DisableLog("rdApp.*")
    gen = rdFingerprintGenerator.GetMorganGenerator(radius=MORGAN_RADIUS, fpSize=MORGAN_BITS)
    out = np.zeros((len(smiles), MORGAN_BITS), dtype=np.float32)
    bad = []
    for i, smi in enumerate(smiles):
        mol = Chem.MolFromSmiles(smi) if isinstance(smi, str) and smi else None
        if mol is None:
            bad.append(i)
            continue
        out[i] = gen.GetCountFingerprintAsNumPy(mol)
    return out, bad


# --------------------------------------------------------------------------- fitting


_ENUMERATE_MAX = 3000
"""Up to this many graphs in a group, its pairs are enumerated; above, they are sampled."""


def _pairs(y: np.ndarray, groups: np.ndarray | None, tie_eps: float,
           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(hi, lo) positions of the training pairs the loss counts (``y_hi - y_lo > tie_eps``,
    inside a group when there are groups), at most :data:`MAX_PAIRS` of them: all of them, or a
    seeded sample where there are more (never an ``N x N`` matrix above
    :data:`_ENUMERATE_MAX` graphs)."""
    codes = np.zeros(len(y), dtype=np.int64) if groups is None else pd.factorize(groups)[0]
    order = np.argsort(codes, kind="stable")
    bounds = np.flatnonzero(np.diff(codes[order])) + 1
    his, los = [], []
    for block in np.split(order, bounds):
        yb = y[block]
        if len(block) <= _ENUMERATE_MAX:
            hi, lo = np.nonzero(yb[:, None] - yb[None, :] > tie_eps)
        else:
            i, j = rng.integers(len(block), size=(2, 4 * MAX_PAIRS))
            i, j = np.where(yb[i] >= yb[j], i, j), np.where(yb[i] >= yb[j], j, i)
            keep = yb[i] - yb[j] > tie_eps
            hi, lo = np.unique(np.stack([i[keep], j[keep]]), axis=1)
        his.append(block[hi])
        los.append(block[lo])
    hi, lo = np.concatenate(his), np.concatenate(los)
    if len(hi) > MAX_PAIRS:
        keep = np.sort(rng.choice(len(hi), MAX_PAIRS, replace=False))
        hi, lo = hi[keep], lo[keep]
    return hi, lo


def _fit_pairwise_logistic(d: np.ndarray, l2: float, tol: float, w0: np.ndarray | None = None
                           ) -> tuple[np.ndarray, optimize.OptimizeResult]:
    """``w`` minimizing ``mean(softplus(-d @ w)) + l2 * |w|^2`` for pair differences ``d``,
    from ``w0`` (a neighbouring L2 strength's solution: a warm start)."""

    def objective(w: np.ndarray) -> tuple[float, np.ndarray]:
        m = d @ w
        loss = np.logaddexp(0.0, -m).mean() + l2 * w @ w
        grad = -(d.T @ expit(-m)) / len(m) + 2 * l2 * w
        return float(loss), grad

    res = optimize.minimize(objective, np.zeros(d.shape[1]) if w0 is None else w0, jac=True,
                            method="L-BFGS-B",
                            options={"gtol": tol, "ftol": 0.0, "maxiter": 10_000})
    return res.x, res


def _select(name: str, grid: Sequence[float], fit, val_idx: Sequence[int], y: np.ndarray,
            features: np.ndarray) -> tuple[float, Any, dict[str, float]]:
    """Fit at every grid value and keep the best validation Spearman (the middle of the grid
    when there is no validation split)."""
    if len(val_idx) < 3:
        value = grid[len(grid) // 2]
        logger.debug("%s baseline: no validation split to choose on; regularization %g",
                    name, value)
        return value, fit(value), {}
    by_value, fits = {}, {}
    for value in grid:
        fits[value] = fit(value)
        by_value[value] = spearman(fits[value][0](features[val_idx]), y[val_idx])
    best = max(grid, key=lambda v: (by_value[v], v))  # a tie: the stronger regularization
    return best, fits[best], {f"{v:g}": round(s, 6) for v, s in by_value.items()}


def _linear(gs, train_idx: Sequence[int], val_idx: Sequence[int], y: np.ndarray,
            groups: np.ndarray | None, tie_eps: float, seed: int, tol: float) -> Baseline:
    x = pooled_features(gs)
    tr = np.asarray(train_idx)
    mean, std = x[tr].mean(0), x[tr].std(0)
    used = std > 0  # a feature constant on the training graphs cannot order them
    if not used.any():
        return Baseline("linear", skipped="every pooled input feature is constant on the "
                                          "training graphs")
    z = (x[:, used] - mean[used]) / std[used]
    hi, lo = _pairs(y[tr], None if groups is None else groups[tr], tie_eps,
                    np.random.default_rng(seed))
    if not len(hi):
        return Baseline("linear", skipped="no training pair differs by more than tie_eps")
    d = z[tr[hi]] - z[tr[lo]]
    warm: list[np.ndarray] = []

    def fit(l2: float):
        w, res = _fit_pairwise_logistic(d, l2, tol, warm[-1] if warm else None)
        warm.append(w)
        return (lambda f, w=w: f @ w), res

    # strongest L2 first: each solution starts the next, weaker one near its optimum
    grid = sorted(LINEAR_L2_GRID, reverse=True)
    l2, (predict, res), by_l2 = _select("linear", grid, fit, val_idx, y, z)
    grad_norm = float(np.abs(res.jac).max())
    info = {"model": "pooled input features -> one score, pairwise logistic loss + L2, L-BFGS",
            "l2": l2, "val_spearman_by_l2": by_l2, "pairs": int(len(hi)),
            "features": int(used.sum()), "iterations": int(res.nit),
            "converged": bool(grad_norm <= tol), "grad_norm": grad_norm, "tol": tol}
    return Baseline("linear", info, _features=z, _predict=predict)


def _smiles(gs) -> list[str] | None:
    col = gs.table["smiles"] if "smiles" in gs.table else None
    if col is None or col.isna().all():
        return None
    return [s if isinstance(s, str) else "" for s in col]


def _fingerprint(gs, name: str, train_idx: Sequence[int], val_idx: Sequence[int],
                 y: np.ndarray, seed: int) -> Baseline:
    smiles = _smiles(gs)
    if smiles is None:
        return Baseline(name, skipped="the graphs have no SMILES (a manifest column `smiles` "
                                      "or Data.smiles): no fingerprint to compute")
    fp, bad = morgan_fingerprints(smiles)
    tr = np.asarray(train_idx)
    if name == "fingerprint":
        from sklearn.linear_model import Ridge  # deferred: a second to import

        def fit(alpha: float):
            m = Ridge(alpha=alpha).fit(fp[tr], y[tr])
            return m.predict, m

        alpha, (predict, _), grid = _select(name, RIDGE_ALPHA_GRID, fit, val_idx, y, fp)
        info = {"model": f"Morgan counts (radius {MORGAN_RADIUS}, {MORGAN_BITS} bits) -> ridge",
                "alpha": alpha, "val_spearman_by_alpha": grid}
    else:
        from sklearn.ensemble import RandomForestRegressor  # deferred with Ridge

        m = RandomForestRegressor(n_estimators=RF_TREES, max_features="sqrt", n_jobs=1,
                                  random_state=seed).fit(fp[tr], y[tr])
        predict = m.predict
        info = {"model": f"Morgan counts (radius {MORGAN_RADIUS}, {MORGAN_BITS} bits) -> "
                         f"random forest ({RF_TREES} trees, sqrt features)"}
    if bad:
        info["unparsed_smiles"] = len(bad)
    return Baseline(name, info, _features=fp, _predict=predict)


def _targets_and_groups(gs) -> tuple[np.ndarray, np.ndarray | None]:
    """The targets the model trains on (each graph's ``y``) and its groups (``Data.group``,
    ``-1`` for none, else the table's ``group`` column), None without groups."""
    y = np.array([float(g.y.reshape(-1)[0]) for g in gs.graphs])
    if gs.graphs and all(getattr(g, "group", None) is not None for g in gs.graphs):
        groups = np.array([int(g.group.reshape(-1)[0]) for g in gs.graphs])
        return y, None if (groups < 0).all() else groups
    col = gs.table["group"] if "group" in gs.table else None
    return y, col.to_numpy() if col is not None and col.notna().any() else None


def fit_baselines(
    gs,
    splits: Mapping[str, Sequence[int]],
    *,
    names: Sequence[str] = DEFAULT,
    tie_eps: float = 1e-6,
    seed: int = 0,
    tol: float = 1e-6,
) -> dict[str, Baseline]:
    """Fit the named baselines (:data:`DEFAULT`; any of :data:`ALL`) on ``splits["train"]``,
    choosing their regularization on ``splits["val"]`` (when it has at least 3 graphs).

    ``tol`` is the linear baseline's gradient tolerance (largest absolute component). A
    baseline that cannot be fitted (no SMILES, no training pair) is returned with ``skipped``
    saying why, never raised.

    Raises:
        ValueError: an unknown baseline name, or fewer than 2 training graphs.
    """
    unknown = sorted(set(names) - set(ALL))
    if unknown:
        raise ValueError(f"unknown baseline(s) {unknown}; choose from {list(ALL)}")
    train_idx, val_idx = list(splits.get("train", [])), list(splits.get("val", []))
    if len(train_idx) < 2:
        raise ValueError(f"baselines need at least 2 training graphs, got {len(train_idx)}")
    y, groups = _targets_and_groups(gs)
    out: dict[str, Baseline] = {}
    for name in names:
        t = time.perf_counter()
        if name == "linear":
            b = _linear(gs, train_idx, val_idx, y, groups, tie_eps, seed, tol)
        else:
            b = _fingerprint(gs, name, train_idx, val_idx, y, seed)
        b.info["fit_s"] = round(time.perf_counter() - t, 3)
        if not b.skipped and len(val_idx) >= 2:
            b.info["val_spearman"] = spearman(b.scores(val_idx), y[val_idx])
        logger.debug("%s baseline: %s", name, b.skipped or b.info)
        out[name] = b
    return out
