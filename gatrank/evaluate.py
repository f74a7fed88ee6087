"""Scoring a checkpoint on a split, with baselines side by side (the runbook's enhanced
evaluation)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from gatrank.baselines import DEFAULT, fit_baselines
from gatrank.config import Config
from gatrank.data import split_indices
from gatrank.datasets import load_data, with_source
from gatrank.io import atomic_write_text, write_json
from gatrank.metrics import bootstrap_intervals, grouped_metrics, paired_bootstrap, ranking_metrics
from gatrank.offline import write_plotly_js
from gatrank.runtime import resolve_device
from gatrank.training import predict
from gatrank.training.checkpoint import load_model

__all__ = ["EvalResult", "load_checkpoint", "evaluate_checkpoint", "baseline_scores"]

logger = logging.getLogger(__name__)


@dataclass
class EvalResult:
    metrics: dict[str, float]
    """The model's metrics on the split."""
    baselines: dict[str, dict[str, float]]
    """Metrics of the constant, random, linear and (for SMILES) fingerprint baselines on the
    same split."""
    predictions: pd.DataFrame
    """One row per graph: id, y, score, residual (score rescaled to y's scale minus y), smiles,
    group."""
    grouped: dict[str, Any] | None
    """Per-group metrics when the manifest has groups."""
    split: str
    baseline_fits: dict[str, dict[str, Any]] = field(default_factory=dict)
    """How each fitted baseline was fitted (:class:`gatrank.baselines.Baseline` ``info``), or
    ``{"skipped": why}``."""
    margins: dict[str, dict[str, Any]] = field(default_factory=dict)
    """The model's Spearman lead over each fitted baseline on the split, with its paired
    bootstrap interval (:func:`gatrank.metrics.paired_bootstrap`)."""
    intervals: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    """The model's and each baseline's Spearman and pairwise accuracy on the split with a 95%
    bootstrap interval over its graphs (:func:`gatrank.metrics.bootstrap_intervals`)."""

    def interval_table(self) -> pd.DataFrame:
        """Model and baselines as rows; per metric its value and interval as ``v [lo, hi]``."""
        return pd.DataFrame.from_dict(
            {who: {m: f"{iv['value']:.3f} [{iv['low']:.3f}, {iv['high']:.3f}]"
                   for m, iv in per.items()} for who, per in self.intervals.items()},
            orient="index")

    def table(self) -> pd.DataFrame:
        """Model and baselines as rows, metrics as columns."""
        rows = {"model": self.metrics, **self.baselines}
        return pd.DataFrame.from_dict(rows, orient="index")


def load_checkpoint(path: str | Path, *, model: str = "",
                    model_kwargs: dict[str, Any] | None = None
                    ) -> tuple[nn.Module, Config, dict]:
    """Rebuild the model saved in a checkpoint (loaded with ``weights_only=True``).

    Args:
        path: a ``best.pt``/``last.pt`` written by :func:`gatrank.training.train`.
        model: the import string of a user model when the checkpoint holds one.
        model_kwargs: its constructor arguments, in place of the checkpoint's
            ``model.kwargs``.

    Returns:
        The model in eval mode on the CPU, the run's config, and the checkpoint's entries (see
        :mod:`gatrank.training.checkpoint` for the format).
    """
    return load_model(path, model=model, model_kwargs=model_kwargs)


def _residuals(scores: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Scores mapped to the target scale by least squares, minus the target."""
    if np.ptp(scores) == 0:
        return np.full_like(y, y.mean()) - y
    a, b = np.polyfit(scores, y, 1)
    return a * scores + b - y


def baseline_scores(
    gs, split_idx: list[int], train_idx: list[int], config: Config, seed: int = 0, *,
    val_idx: list[int] | None = None, names=DEFAULT,
) -> dict[str, np.ndarray]:
    """Scores of the reference baselines on ``split_idx``.

    - ``constant``: the same score for every graph (what a collapsed model does);
    - ``random``: seeded uniform noise (chance level);
    - ``linear``, ``fingerprint`` (graphs from SMILES), ...: :func:`gatrank.baselines.
      fit_baselines` fitted on ``train_idx``, regularization chosen on ``val_idx``; one that
      was skipped (no SMILES) is absent.
    """
    return _baselines(gs, split_idx, train_idx, val_idx or [], config, seed, names)[0]


def _baselines(gs, split_idx: list[int], train_idx: list[int], val_idx: list[int],
               config: Config, seed: int, names=DEFAULT
               ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
    """(scores on ``split_idx`` per baseline, how each fitted one was fitted)."""
    rng = np.random.default_rng(seed)
    n = len(split_idx)
    out = {"constant": np.zeros(n), "random": rng.random(n)}
    fits: dict[str, dict[str, Any]] = {}
    if len(train_idx) >= 2:
        fitted = fit_baselines(gs, {"train": train_idx, "val": val_idx}, names=names,
                               tie_eps=config.loss.tie_eps, seed=seed)
        for name, b in fitted.items():
            fits[name] = {"skipped": b.skipped} if b.skipped else dict(b.info)
            if not b.skipped:
                out[name] = b.scores(split_idx)
    return out, fits


def evaluate_checkpoint(
    checkpoint: str | Path,
    manifest: str | Path | None = None,
    *,
    dataset: str | None = None,
    split: str = "test",
    model: str = "",
    model_kwargs: dict[str, Any] | None = None,
    out_dir: str | Path | None = None,
    k: int = 10,
    baselines: bool = True,
    device: str = "",
    shared_plotly_js: str | Path | None = None,
) -> EvalResult:
    """Score ``checkpoint`` on ``split`` (``train``/``val``/``test``/``all``) of ``manifest``
    or ``dataset`` (a PyG dataset spec; default: the data the checkpoint trained on).

    The split is recomputed exactly as training made it (same data, seed and fractions).
    ``device`` (``auto``/``cpu``/``cuda``) overrides the checkpoint's ``training.device``
    (default ``auto``: CUDA when present), for scoring and for the baselines trained beside it.
    With ``out_dir``: ``predictions.csv``, ``metrics.json`` and ``scatter.html``, which opens
    offline: plotly.js embedded, or, given ``shared_plotly_js`` (a folder, e.g. the suite's
    report folder), loaded from the one ``plotly.min.js`` there (written if missing), so a
    report folder holds one copy of its 4.8 MB.
    """
    net, config, _ = load_checkpoint(checkpoint, model=model, model_kwargs=model_kwargs)
    if device:
        config = config.updated({"training.device": device})
    gs = load_data(with_source(config.data, manifest, dataset))
    if split == "all":
        idx = list(range(len(gs)))
        train_idx, val_idx = idx, []
    else:
        splits = split_indices(
            gs,
            seed=config.training.seed,
            val_fraction=config.data.val_fraction,
            test_fraction=config.data.test_fraction,
        )
        if split not in splits:
            raise ValueError(f"unknown split {split!r}; use one of {sorted(splits)} or 'all'")
        idx, train_idx, val_idx = splits[split], splits["train"], splits.get("val", [])
        if not idx:
            raise ValueError(f"split {split!r} of {gs.source} is empty")
    device = resolve_device(config.training.device)
    net = net.to(device)
    pred = predict(net, [gs[i] for i in idx], device)
    s, y = pred["scores"].numpy(), pred["targets"].numpy()
    tie_eps = config.loss.tie_eps
    metrics = ranking_metrics(s, y, tie_eps=tie_eps, k=k)
    table = gs.table.iloc[idx].reset_index(drop=True)
    preds = pd.DataFrame(
        {
            "id": table["id"].astype(str),
            "y": y,
            "score": s,
            "residual": _residuals(s.astype(np.float64), y.astype(np.float64)),
        }
    )
    for col in ("smiles", "group", "split"):
        if col in table and table[col].notna().any():
            preds[col] = table[col].values
    base, fits, margins, scorers = {}, {}, {}, {"model": s}
    if baselines:
        scores, fits = _baselines(gs, idx, train_idx, val_idx, config, config.training.seed)
        for name, b in scores.items():
            base[name] = ranking_metrics(b, y, tie_eps=tie_eps, k=k)
            scorers[name] = b
            if name in fits:
                margins[name] = paired_bootstrap(s, b, y, seed=config.training.seed)
    intervals = bootstrap_intervals(scorers, y, seed=config.training.seed, tie_eps=tie_eps)
    grouped = None
    if "group" in preds:
        grouped = grouped_metrics(s, y, preds["group"].tolist(), tie_eps=tie_eps, k=k)
    result = EvalResult(metrics=metrics, baselines=base, predictions=preds, grouped=grouped,
                        split=split, baseline_fits=fits, margins=margins,
                        intervals=intervals)
    if out_dir:
        _write_eval(result, Path(out_dir), checkpoint, gs, shared_plotly_js)
    return result


def _write_eval(result: EvalResult, out: Path, checkpoint, gs,
                shared_plotly_js: str | Path | None) -> None:
    # deferred on purpose: plotly (through gatrank.plots) is a heavy import, needed only here
    from gatrank.plots import scatter_pred_vs_true

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "predictions.csv", result.predictions.to_csv(index=False))
    write_json(
        out / "metrics.json",
        {
            "checkpoint": str(checkpoint),
            "manifest": "" if gs.manifest is None else str(gs.manifest),
            "dataset": gs.dataset,
            "split": result.split,
            "metrics": result.metrics,
            "baselines": result.baselines,
            "baseline_fits": result.baseline_fits,
            "margins": result.margins,
            "intervals": result.intervals,
            "grouped": result.grouped,
        },
    )
    fig = scatter_pred_vs_true(result.predictions, title=f"Predicted vs true ({result.split})")
    script: bool | str = True  # inlined
    if shared_plotly_js is not None:  # plotly takes a str ending in .js as the script's src
        script = Path(os.path.relpath(write_plotly_js(shared_plotly_js), out)).as_posix()
    atomic_write_text(out / "scatter.html", fig.to_html(include_plotlyjs=script, full_html=True))
