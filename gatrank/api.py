"""gatrank in a notebook of your own: your graphs and your model, as objects.

.. code-block:: python

    import gatrank
    report = gatrank.check_data(graphs)            # every problem of every graph, at once
    result = gatrank.overfit_test(model, graphs)   # the runbook's overfit test, first 32 graphs
    doctor = gatrank.diagnose(model, graphs)       # why it collapses: causes, evidence, fixes

``graphs`` is whatever you hold (:mod:`gatrank.data.sources`): a list of ``Data``, a PyG
``Dataset``/``InMemoryDataset``, a ``DataLoader``, a ``GraphSet``, a manifest or ``.pt`` path
or an import string; ``None`` reads the embedded default data. ``model`` is a module instance
(deep-copied: your module is never changed), a class or factory (``in_channels``,
``out_channels`` and ``edge_dim`` filled in where its signature names them), an import string
``package.module:Name``, or ``None`` for gatrank's GATRanker. ``loss`` is a callable
``(scores, targets) -> scalar`` or an import string; ``None`` is gatrank's pairwise loss.

Every result shows itself as a table when a cell ends with it (``_repr_html_``, the renderer
the suite's reports use, :mod:`gatrank.render`) and as today's text under ``print``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from gatrank import render
from gatrank.checks import verdict as verdicts
from gatrank.checks.verdict import THRESHOLDS, Verdict, format_verdict
from gatrank.config import Config, load_config, overfit_config
from gatrank.data import CheckReport
from gatrank.data.sources import graph_source
from gatrank.datasets import check_source, load_source
from gatrank.doctor.judge import judge_run
from gatrank.doctor.report import DoctorOptions, DoctorReport
from gatrank.doctor.run import diagnose as run_doctor
from gatrank.training import train

__all__ = ["check_data", "overfit_test", "diagnose", "OverfitResult"]

ModelLike = nn.Module | type | Callable[..., nn.Module] | str | None
"""A model instance, a class or factory, an import string, or None (GATRanker)."""


def _config(config: Config | str | Path | Mapping | None, seed: int | None) -> Config:
    """A Config from a Config, a YAML path, a mapping of YAML's sections, or None (defaults)."""
    if isinstance(config, Config):
        cfg = config
    elif isinstance(config, Mapping):
        cfg = Config.from_dict(dict(config), source="config=")
    elif config is None or isinstance(config, (str, Path)):
        cfg = load_config(config or None)
    else:
        raise TypeError(f"config must be a gatrank Config, a YAML path or a mapping of its "
                        f"sections ({{'training': {{'learning_rate': 1e-3}}}}), not a "
                        f"{type(config).__name__}")
    return cfg if seed is None else cfg.updated({"training.seed": seed})


def _model(model: ModelLike) -> ModelLike:
    """The model to hand on: an instance deep-copied (the caller's is never trained or
    edited); anything else as it is, checked for its kind."""
    if isinstance(model, nn.Module):
        return copy.deepcopy(model)
    if model is None or isinstance(model, str) or callable(model):
        return model
    raise TypeError(f"model must be a torch.nn.Module instance, a class or factory "
                    f"(in_channels -> nn.Module), an import string 'package.module:Name', or "
                    f"None for gatrank's GATRanker, not a {type(model).__name__}")


def _loss(loss: Callable | str | None) -> Callable | str | None:
    if loss is None or isinstance(loss, str) or callable(loss):
        return loss
    raise TypeError(f"loss must be a callable (scores, targets) -> scalar tensor, an import "
                    f"string 'package.module:name', or None for gatrank's pairwise loss, not a "
                    f"{type(loss).__name__}")


def check_data(data: Any = None, *, config: Config | str | Path | Mapping | None = None
               ) -> CheckReport:
    """Every problem of every graph at once (the runbook's Step 2B), the checks
    ``gatrank check-data`` runs; never raises for a problem of the data.

    Args:
        data: your graphs (see the module docstring); ``None``: the config's data source, else
            the embedded default.
        config: a :class:`~gatrank.config.Config`, a YAML path or a mapping of its sections
            (its ``data`` section: ``allow_outside_root`` for a manifest's files).

    Returns:
        A :class:`~gatrank.data.CheckReport`: ``.problems`` (each naming the graph's index and
        id, the problem and the one-line fix), ``.ok``, ``.summary``; a table in a notebook.
    """
    return check_source(graph_source(data), _config(config, None).data)


@dataclass
class OverfitResult:
    """The runbook's overfit test of one model on its first ``n`` graphs."""

    verdict: Verdict
    """The runbook's pass criteria and red flags, measured (:mod:`gatrank.checks.verdict`)."""
    reading: DoctorReport
    """The doctor's reading of the run's history (:func:`gatrank.doctor.diagnose_history`):
    cause ids with evidence and fixes when it failed; run :func:`diagnose` for the ablations
    and verified fixes."""
    history: list[dict[str, Any]]
    """One record per logged epoch: loss, pairwise_accuracy, spearman, score_std, ..."""
    summary: dict[str, Any]
    """What :func:`gatrank.training.train` returns as ``summary`` (epochs run, time, ...)."""
    model: nn.Module
    """The trained model: a copy of yours, never your own instance."""
    n: int
    source: str
    """Where the graphs came from."""

    @property
    def passed(self) -> bool:
        return self.verdict.passed

    def __str__(self) -> str:
        lines = [self._title(), format_verdict(self.verdict)]
        if not self.passed:
            lines.append(self.reading.format_text())
        return "\n".join(lines)

    def _title(self) -> str:
        return (f"overfit test: first {self.n} graphs of {self.source}, "
                f"{self.summary.get('epochs_run', len(self.history))} epochs in "
                f"{self.summary.get('wall_time_s', 0.0):.1f} s")

    def _repr_pretty_(self, p, cycle) -> None:
        """IPython's text form (a terminal, a text export): the report, not the fields."""
        p.text(str(self))

    def _repr_html_(self) -> str:
        return render.overfit_html(self._title(), self.verdict.to_dict(), self.history,
                                   self.reading.to_dict() if not self.passed else None,
                                   thresholds=THRESHOLDS,
                                   still_learning=self.verdict.still_learning)


def overfit_test(model: ModelLike = None, data: Any = None, *, n: int = 32,
                 loss: Callable | str | None = None,
                 config: Config | str | Path | Mapping | None = None, seed: int | None = None,
                 epochs: int = 500, learning_rate: float = 5e-3, stop_at_verdict: bool = False,
                 progress: bool = True) -> OverfitResult:
    """The runbook's overfit test: train on the first ``n`` graphs as one batch, no dropout,
    and judge the result by its expected results (pairwise accuracy > 0.9, Spearman > 0.8,
    score std > 0.1, loss falling, gradients > 0.01).

    Args:
        model: your model (see the module docstring); an instance is deep-copied, yours keeps
            its weights bitwise.
        data: your graphs; ``None``: the config's data source, else the embedded default.
        n: graphs in the test (the runbook's 32).
        loss: your loss, or ``None`` for gatrank's.
        config: your settings (a Config, a YAML path or a mapping of its sections); the
            overfit test's own (full batch, no dropout, ``epochs``, ``learning_rate``) are laid
            over them as :func:`gatrank.config.overfit_config` does.
        seed: overrides ``training.seed``.
        epochs, learning_rate: the runbook's 500 and 5e-3.
        stop_at_verdict: end at the first logged epoch where every pass criterion holds.
        progress: a progress bar over epochs.

    Raises:
        DataError: the graphs have problems (every one listed, by graph index); run
            :func:`check_data` for the report.
    """
    cfg = _config(config, seed)
    cfg = overfit_config(cfg, n).updated({"training.epochs": epochs,
                                          "training.learning_rate": learning_rate})
    src = graph_source(data)
    net, loss = _model(model), _loss(loss)
    graphs = load_source(src, cfg.data)
    result = train(cfg, graphs=graphs, model=net, loss=loss, progress=progress,
                   stop_when=verdicts.stop_at_verdict if stop_at_verdict else None, checkpoints=())
    judged = judge_run(result, config=cfg)
    return OverfitResult(verdict=judged.verdict, reading=judged.reading,
                         history=list(result.history), summary=dict(result.summary),
                         model=result.model, n=min(n, len(graphs)), source=src.label)


def diagnose(model: ModelLike = None, data: Any = None, *, loss: Callable | str | None = None,
             config: Config | str | Path | Mapping | None = None, seed: int | None = None,
             options: DoctorOptions | None = None) -> DoctorReport:
    """The doctor (:func:`gatrank.doctor.diagnose`): the runbook's checks end to end on your
    model and graphs, the causes ranked with their evidence and fixes, the top fixes verified.

    Args:
        model, data, loss, config, seed: as :func:`overfit_test`'s (an instance is copied for
            every run; yours is never changed).
        options: the doctor's budgets (:class:`~gatrank.doctor.DoctorOptions`), e.g.
            ``DoctorOptions(heldout=False)`` to skip the held-out stage.

    Returns:
        A :class:`~gatrank.doctor.DoctorReport`; a table in a notebook, the terminal report
        under ``print``.
    """
    src = graph_source(data)
    cfg = _config(config, None)
    keys = {"config": config} if isinstance(config, (str, Path)) and config else {"config": cfg}
    where = ({"graphs": src.graphset} if src.graphset is not None else
             {"graphs": src.graphs} if src.graphs is not None else
             {"manifest": src.manifest or None, "dataset": src.dataset or None})
    return run_doctor(**where, **keys, model=_model(model), loss=_loss(loss), seed=seed,
                      options=options)

