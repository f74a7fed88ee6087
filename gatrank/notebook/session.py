"""A notebook's run: its resolved parameters, loaded graphs and recorded results.

:func:`start` resolves a notebook's common parameters (manifest or dataset, config, model, loss,
seed, run folder), loads the graphs and returns a :class:`NotebookRun`, whose
:meth:`~NotebookRun.record` writes ``<run_dir>/<notebook>.results.json`` (what ``gatrank suite``
reads).

Run folder: the ``run_dir`` parameter, else ``$GATRANK_RUN_DIR``, else ``reports/interactive``
in the project (the folder holding ``notebooks/`` and ``params/``), else ``./gatrank-reports``.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gatrank.checks.steps import summarize_checks
from gatrank.checks.verdict import Check
from gatrank.config import Config, load_config, parse_model_kwargs
from gatrank.data import is_dataset_file
from gatrank.datasets import default_manifest, load_data, with_source
from gatrank.io import write_json
from gatrank.notebook.display import setup
from gatrank.notebook.results import check_dicts
from gatrank.project import STEPS, project_root
from gatrank.training import train

__all__ = [
    "STEPS",
    "NotebookRun",
    "project_root",
    "resolve_path",
    "resolve_run_dir",
    "resolve_config",
    "start",
    "checkpoint_for_eval",
]

logger = logging.getLogger(__name__)



# --------------------------------------------------------------------------- paths and config


def resolve_path(path: str | Path, *, what: str = "file") -> Path:
    """An existing path: as given (absolute or relative to cwd), else relative to the project.

    Raises:
        FileNotFoundError: naming the places looked at.
    """
    p = Path(path).expanduser()
    if p.exists():
        return p.resolve()
    root = project_root()
    if not p.is_absolute() and root is not None and (root / p).exists():
        return (root / p).resolve()
    where = f" or {root / p}" if root is not None and not p.is_absolute() else ""
    raise FileNotFoundError(f"{what} {str(path)!r} not found (looked at {p.resolve()}{where})")


def resolve_run_dir(run_dir: str | Path = "") -> Path:
    """The folder a notebook writes its results and checkpoints to (created if missing).

    ``run_dir`` if given; else ``$GATRANK_RUN_DIR``; else ``<project>/reports/interactive``;
    else ``./gatrank-reports``. Notebooks of one run share it, so 05 finds 04's checkpoint.
    """
    if run_dir:
        out = Path(run_dir).expanduser()
    elif os.environ.get("GATRANK_RUN_DIR"):
        out = Path(os.environ["GATRANK_RUN_DIR"]).expanduser()
    else:
        root = project_root()
        out = root / "reports" / "interactive" if root else Path.cwd() / "gatrank-reports"
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    return out


def resolve_config(config: str = "", *, default: str = "", seed: int | None = None) -> Config:
    """Load ``config`` (a YAML path); empty means ``default`` (e.g. ``params/config_example.yaml``,
    used only if it exists) and otherwise gatrank's defaults. ``seed`` sets ``training.seed``."""
    cfg: Config
    if config:
        cfg = load_config(resolve_path(config, what="config"))
    elif default:
        try:
            cfg = load_config(resolve_path(default, what="config"))
        except FileNotFoundError:
            logger.info("%s not found; using gatrank's defaults (the runbook's recommended "
                        "values)", default)
            cfg = Config()
    else:
        cfg = Config()
    if seed is not None:
        cfg = cfg.updated({"training.seed": int(seed)})
    return cfg


# --------------------------------------------------------------------------- a notebook's run


def _jsonable(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (np.generic, torch.Tensor)) and getattr(v, "ndim", 0) == 0:
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, Path):
        return str(v)
    return v


@dataclass
class NotebookRun:
    """A notebook's resolved parameters and loaded data (see :func:`start`)."""

    name: str
    run_dir: Path
    config: Config
    graphs: Any
    """A :class:`gatrank.data.GraphSet`."""
    manifest: Path | None
    """The manifest the graphs came from; None for a dataset."""
    model: str
    loss: str
    seed: int
    started: float = field(default_factory=time.perf_counter)
    dataset: str = ""
    """The PyG dataset the graphs came from (``package.module:name`` or an absolute ``.pt``
    path); empty for a manifest."""

    @property
    def source_args(self) -> str:
        """The command-line flag naming this run's data: ``--dataset SPEC`` or ``--manifest M``."""
        return f"--dataset {self.dataset}" if self.dataset else f"--manifest {self.manifest}"

    @property
    def out_dir(self) -> Path:
        """``<run_dir>/<notebook>``: where this notebook's training writes its files."""
        return self.run_dir / self.name

    @property
    def results_path(self) -> Path:
        return self.run_dir / f"{self.name}.results.json"

    def record(self, checks: Sequence[Mapping[str, Any] | Check], **results: Any
               ) -> dict[str, Any]:
        """Write ``<run_dir>/<notebook>.results.json`` and return what was written.

        ``checks``: check dicts and a verdict's :class:`~gatrank.checks.verdict.Check` objects,
        recorded as dicts. Keys: notebook, step, passed, label, checks, duration_s, manifest,
        dataset, num_graphs, seed, model, loss, created, python (the kernel's interpreter), plus
        ``results`` (e.g. ``metrics``, ``verdict``).
        """
        checks = check_dicts(checks)
        passed, label = summarize_checks(checks)
        out = {
            "notebook": self.name,
            "step": STEPS.get(self.name, self.name),
            "passed": passed,
            "label": label,
            "checks": checks,
            "duration_s": round(time.perf_counter() - self.started, 2),
            "manifest": "" if self.manifest is None else str(self.manifest),
            "dataset": self.dataset,
            "num_graphs": len(self.graphs),
            "seed": self.seed,
            "model": self.model or "gat",
            "loss": self.loss or "pairwise_rank_loss",
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "python": sys.executable,
            **results,
        }
        out = _jsonable(out)
        write_json(self.results_path, out)
        return out


def start(
    name: str,
    *,
    manifest: str = "",
    dataset: str = "",
    config: str = "",
    model: str = "",
    loss: str = "",
    seed: int = 0,
    run_dir: str = "",
    default_config: str = "",
    on_error: str = "skip",
    model_kwargs: str | Mapping[str, Any] = "",
) -> NotebookRun:
    """Set up a notebook: plotly renderer, run folder, config (with ``seed``) and graphs.

    Args:
        name: the notebook's stem, e.g. ``03_overfit`` (names the results file).
        manifest: a manifest.csv; empty = the config's data source, else the embedded default
            (chembl-activity).
        dataset: a PyG dataset instead (``package.module:name`` or a ``.pt`` file, see
            :mod:`gatrank.data.pyg_dataset`); exclusive with ``manifest``.
        config: a YAML config; empty = ``default_config`` if it exists, else the defaults.
        model, loss: import strings ``package.module:Name`` (empty: gatrank's own).
        model_kwargs: the model's other constructor arguments, a JSON object (or a mapping);
            sets ``model.kwargs`` of the config (empty: the config's).
        on_error: ``skip`` drops bad rows (listed in ``graphs.dropped``) so later steps can still
            run; 01_data_checks reports them.
    """
    setup()
    cfg = resolve_config(config, default=default_config, seed=seed)
    data = with_source(cfg.data, manifest, dataset)  # the parameters win over the config
    if data.dataset:
        spec = (str(resolve_path(data.dataset, what="dataset file"))
                if is_dataset_file(data.dataset) else data.dataset)
        cfg = cfg.updated({"data.manifest": "", "data.dataset": spec, "data.on_error": on_error})
    else:
        path = (resolve_path(data.manifest, what="manifest") if data.manifest
                else default_manifest())
        cfg = cfg.updated({"data.manifest": str(path), "data.dataset": "",
                           "data.on_error": on_error})
    kwargs = parse_model_kwargs(model_kwargs, source="model_kwargs")
    if kwargs:
        cfg = cfg.updated({"model.kwargs": kwargs})
    gs = load_data(cfg.data)
    return NotebookRun(name=name, run_dir=resolve_run_dir(run_dir), config=cfg, graphs=gs,
                       manifest=gs.manifest, model=model, loss=loss, seed=int(seed),
                       dataset=gs.dataset)


def checkpoint_for_eval(run: NotebookRun, checkpoint: str = "", *,
                        fallback_epochs: int = 20) -> tuple[Path, str]:
    """The checkpoint 05_eval scores, and where it came from.

    ``checkpoint`` if given; else ``<run_dir>/04_full_train/best.pt`` (what 04_full_train
    saves); else, so that the notebook also runs on its own, a model trained now with the run's
    config for ``fallback_epochs`` epochs into ``<run_dir>/05_eval/model/`` (logged as a
    warning).
    """
    if checkpoint:
        return resolve_path(checkpoint, what="checkpoint"), "given"
    saved = run.run_dir / "04_full_train" / "best.pt"
    if saved.is_file():
        return saved, "04_full_train"
    logger.warning("no checkpoint at %s (run 04_full_train first to evaluate its model); "
                   "training one now for %d epochs", saved, fallback_epochs)
    cfg = run.config.updated({"training.epochs": fallback_epochs})
    out = run.out_dir / "model"
    train(cfg, graphs=run.graphs, model=run.model or None, loss=run.loss or None, out_dir=out,
          progress=False)
    return out / "best.pt", f"trained here for {fallback_epochs} epochs (no 04 checkpoint)"
