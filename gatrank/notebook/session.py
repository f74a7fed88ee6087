"""What the five notebooks call, so that they stay thin (no ``def`` or ``class`` in a notebook).

- :func:`start` resolves a notebook's common parameters (manifest, config, model, loss, seed,
  run folder), loads the graphs and returns a :class:`NotebookRun`, whose
  :meth:`~NotebookRun.record` writes ``<run_dir>/<notebook>.results.json`` (what
  ``gatrank suite`` reads).
- Display: an offline plotly renderer (figure JSON for JupyterLab plus HTML that needs no CDN),
  :class:`LiveCurves` (training curves redrawn in place while training runs),
  :func:`sortable_table`, :func:`show_results`, and ipywidgets explorers (a sample browser, an
  epoch slider, a top-k slider).

The measurements themselves are in :mod:`gatrank.checks.steps`; figures in
:mod:`gatrank.plots`.

Run folder: the ``run_dir`` parameter, else ``$GATRANK_RUN_DIR``, else ``reports/interactive``
in the project (the folder holding ``notebooks/`` and ``params/``), else ``./gatrank-reports``.
"""

from __future__ import annotations

import html
import logging
import math
import os
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from gatrank.checks.steps import summarize_checks
from gatrank.config import Config, load_config
from gatrank.io import write_json

__all__ = [
    "RENDERER",
    "STEPS",
    "NotebookRun",
    "setup",
    "show",
    "project_root",
    "resolve_path",
    "resolve_run_dir",
    "resolve_config",
    "start",
    "checkpoint_for_eval",
    "checks_table",
    "show_checks",
    "show_causes",
    "show_grouped",
    "show_results",
    "config_table",
    "sortable_table",
    "LiveCurves",
    "node_labels",
    "draw_graph",
    "sample_browser",
    "epoch_explorer",
    "topk_explorer",
]

logger = logging.getLogger(__name__)

RENDERER = "gatrank"
"""Name of the plotly renderer :func:`setup` makes the default."""

STEPS: dict[str, str] = {
    "01_data_checks": "Step 2B: data pipeline",
    "02_loss_tests": "Step 2A: loss function",
    "03_overfit": "Step 1: overfit test",
    "04_full_train": "Step 3: full training",
    "05_eval": "Enhanced evaluation",
}
"""The runbook step each notebook implements."""


# --------------------------------------------------------------------------- rendering


def _figure_html(fig_dict: dict[str, Any]) -> str:
    """A div and a script that draw the figure with an already loaded ``window.Plotly``.

    No plotly.js and no CDN link: ``gatrank suite`` puts plotly.js once into each exported HTML
    page. Where plotly.js is absent the div says so instead of failing silently.
    """
    from plotly.io.json import to_json_plotly

    div = f"gatrank-plot-{uuid.uuid4().hex[:12]}"
    height = (fig_dict.get("layout") or {}).get("height") or 450
    spec = to_json_plotly({"data": fig_dict.get("data", []), "layout": fig_dict.get("layout", {}),
                           "config": {"responsive": True}})
    return (
        f'<div id="{div}" class="gatrank-plot" style="width:100%;height:{int(height)}px;"></div>'
        '<script type="text/javascript">(function(){'
        f'var el=document.getElementById("{div}");if(!el){{return;}}'
        'if(!window.Plotly){el.style.height="auto";el.textContent="(interactive plot: '
        'plotly.js is not loaded in this page; open the notebook in JupyterLab or export it '
        'with gatrank suite)";return;}'
        f"var f={spec};Plotly.newPlot(el,f.data,f.layout,f.config);"
        "})();</script>"
    )


def _make_renderer():
    from plotly.io._base_renderers import MimetypeRenderer, PlotlyRenderer

    class OfflineRenderer(MimetypeRenderer):
        """plotly JSON for JupyterLab plus self-contained HTML for exports; no CDN."""

        def to_mimebundle(self, fig_dict):
            bundle = PlotlyRenderer(config={"responsive": True}).to_mimebundle(fig_dict)
            title = ((fig_dict.get("layout") or {}).get("title") or {}).get("text", "")
            bundle["text/html"] = _figure_html(fig_dict)
            bundle["text/plain"] = f"<plotly figure: {title}>" if title else "<plotly figure>"
            return bundle

    return OfflineRenderer()


_RENDERER = _make_renderer()


def setup() -> None:
    """Make :data:`RENDERER` plotly's default renderer (idempotent).

    Figures then carry ``application/vnd.plotly.v1+json`` (JupyterLab draws it natively) and a
    ``text/html`` fallback that uses an embedded plotly.js, never a CDN.
    """
    import plotly.io as pio

    pio.renderers[RENDERER] = _RENDERER
    pio.renderers.default = RENDERER


def _ipython():
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return get_ipython()


def _bundle(obj: Any) -> dict[str, Any] | None:
    """A plotly figure's mime bundle from :data:`RENDERER` (None for anything else).

    plotly figures display themselves through ``_ipython_display_``, which drops the
    ``display_id`` that in-place updates need; a raw bundle keeps it.
    """
    import plotly.graph_objects as go

    if isinstance(obj, go.Figure):
        return _RENDERER.to_mimebundle(obj.to_dict())
    return None


def show(obj: Any, handle: Any = None) -> Any:
    """Display ``obj`` in a notebook, or replace what ``handle`` shows; returns the handle.

    A no-op outside IPython. Plotly figures go out as :data:`RENDERER` bundles.
    """
    if _ipython() is None:
        return None
    from IPython.display import display

    bundle = _bundle(obj)
    if handle is not None:
        if bundle is not None:
            handle.update(bundle, raw=True)
        else:
            handle.update(obj)
        return handle
    if bundle is not None:
        return display(bundle, raw=True, display_id=True)
    return display(obj, display_id=True)


# --------------------------------------------------------------------------- paths and config


def project_root(start: str | Path | None = None) -> Path | None:
    """The project folder: the first of ``start`` (default: cwd) and its parents that holds
    both ``notebooks/`` and ``params/``; else the folder above the installed package if it does;
    else ``None``."""
    here = Path(start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / "notebooks").is_dir() and (d / "params").is_dir():
            return d
    pkg_parent = Path(__file__).resolve().parents[2]  # .../gatrank/notebook/session.py
    if (pkg_parent / "notebooks").is_dir() and (pkg_parent / "params").is_dir():
        return pkg_parent
    return None


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
    manifest: Path
    model: str
    loss: str
    seed: int
    started: float = field(default_factory=time.perf_counter)

    @property
    def out_dir(self) -> Path:
        """``<run_dir>/<notebook>``: where this notebook's training writes its files."""
        return self.run_dir / self.name

    @property
    def results_path(self) -> Path:
        return self.run_dir / f"{self.name}.results.json"

    def record(self, checks: Sequence[Mapping[str, Any]], **results: Any) -> dict[str, Any]:
        """Write ``<run_dir>/<notebook>.results.json`` and return what was written.

        Keys: notebook, step, passed, label, checks, duration_s, manifest, num_graphs, seed,
        model, loss, created, python (the kernel's interpreter), plus ``results`` (e.g.
        ``metrics``, ``verdict``).
        """
        passed, label = summarize_checks(checks)
        out = {
            "notebook": self.name,
            "step": STEPS.get(self.name, self.name),
            "passed": passed,
            "label": label,
            "checks": list(checks),
            "duration_s": round(time.perf_counter() - self.started, 2),
            "manifest": str(self.manifest),
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
    config: str = "",
    model: str = "",
    loss: str = "",
    seed: int = 0,
    run_dir: str = "",
    default_config: str = "",
    on_error: str = "skip",
) -> NotebookRun:
    """Set up a notebook: plotly renderer, run folder, config (with ``seed``) and graphs.

    Args:
        name: the notebook's stem, e.g. ``03_overfit`` (names the results file).
        manifest: a manifest.csv; empty = the embedded default (chembl-activity).
        config: a YAML config; empty = ``default_config`` if it exists, else the defaults.
        model, loss: import strings ``package.module:Name`` (empty: gatrank's own).
        on_error: ``skip`` drops bad rows (listed in ``graphs.dropped``) so later steps can still
            run; 01_data_checks reports them.
    """
    from gatrank.data import load_graphs
    from gatrank.datasets import default_manifest

    setup()
    cfg = resolve_config(config, default=default_config, seed=seed)
    path = resolve_path(manifest, what="manifest") if manifest else default_manifest()
    cfg = cfg.updated({"data.manifest": str(path), "data.on_error": on_error})
    gs = load_graphs(path, on_error=on_error, allow_outside_root=cfg.data.allow_outside_root)
    return NotebookRun(name=name, run_dir=resolve_run_dir(run_dir), config=cfg, graphs=gs,
                       manifest=path, model=model, loss=loss, seed=int(seed))


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
    from gatrank.training import train

    logger.warning("no checkpoint at %s (run 04_full_train first to evaluate its model); "
                   "training one now for %d epochs", saved, fallback_epochs)
    cfg = run.config.updated({"training.epochs": fallback_epochs})
    out = run.out_dir / "model"
    train(cfg, graphs=run.graphs, model=run.model or None, loss=run.loss or None, out_dir=out,
          progress=False)
    return out / "best.pt", f"trained here for {fallback_epochs} epochs (no 04 checkpoint)"


# --------------------------------------------------------------------------- tables


def checks_table(checks: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Checks as a DataFrame with a ``result`` column: ok/FAIL, -- /FLAG, ok/WARN."""
    marks = {"pass": ("ok", "FAIL"), "red_flag": ("--", "FLAG"), "warning": ("ok", "WARN")}
    rows = [{"check": c["rule"], "kind": c["kind"], "measured": c["value"],
             "result": marks[c["kind"]][0 if c["ok"] else 1], "detail": c.get("detail", "")}
            for c in checks]
    return pd.DataFrame(rows, columns=["check", "kind", "measured", "result", "detail"])


def _checks_html(checks: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for _, r in checks_table(checks).iterrows():
        bad = r["result"] in ("FAIL", "FLAG")
        style = ("color:#cf222e;font-weight:bold" if bad
                 else "color:#9a6700;font-weight:bold" if r["result"] == "WARN" else "")
        measured = "" if r["measured"] is None or pd.isna(r["measured"]) else f"{r['measured']:.4g}"
        rows.append(f"<tr><td style='text-align:left'>{html.escape(r['check'])}</td>"
                    f"<td style='text-align:left'>{r['kind']}</td>"
                    f"<td style='text-align:right'>{measured}</td>"
                    f"<td style='text-align:left;{style}'>{r['result']}</td>"
                    f"<td style='text-align:left'>{html.escape(str(r['detail']))}</td></tr>")
    head = "".join(f"<th style='text-align:left'>{h}</th>"
                   for h in ("check", "kind", "measured", "result", "detail"))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def show_checks(checks: Sequence[Mapping[str, Any]]) -> None:
    """Display checks as a table, failures in red and warnings in amber."""
    if _ipython() is None:
        return
    from IPython.display import HTML, display

    display(HTML(_checks_html(checks)))


def show_results(results: Mapping[str, Any]) -> None:
    """Display a results dict: its step and label as a heading, then its checks."""
    if _ipython() is None:
        return
    from IPython.display import HTML, display

    colour = "#1a7f37" if results["passed"] else "#cf222e"
    display(HTML(f"<h3 style='color:{colour}'>{html.escape(results['step'])}: "
                 f"{html.escape(results['label'])}</h3>" + _checks_html(results["checks"])))


def show_causes(report: Any, *, command: str = "gatrank doctor") -> None:
    """Display a :class:`gatrank.doctor.DoctorReport`: its verdict, then each cause (most likely
    first) with its likelihood, evidence and the runbook's fix; when there is none, one line."""
    if _ipython() is None:
        return
    from IPython.display import HTML, display

    if not report.causes:
        display(HTML(f"<p>The doctor's reading: <b>{html.escape(report.verdict)}</b>, no cause "
                     "of collapse found.</p>"))
        return
    rows = "".join(
        f"<tr><td style='text-align:right'>{k}</td>"
        f"<td style='text-align:left'><code>{html.escape(c.id)}</code></td>"
        f"<td style='text-align:right'>{c.score:.2f}</td>"
        f"<td style='text-align:left'>{html.escape(c.evidence)}</td>"
        f"<td style='text-align:left'>{html.escape(c.fix)}</td></tr>"
        for k, c in enumerate(report.causes, 1))
    head = "".join(f"<th style='text-align:left'>{h}</th>"
                   for h in ("#", "cause", "likelihood", "evidence", "fix"))
    display(HTML(
        f"<p style='color:#cf222e'>The doctor's reading: <b>{html.escape(report.verdict)}</b>. "
        f"Likely causes, most likely first (for static checks and ablations that tell them "
        f"apart, run <code>{html.escape(command)}</code>):</p>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"))


def config_table(config: Config) -> pd.DataFrame:
    """A config as rows (section, key) -> value."""
    rows = [(section, key, value) for section, values in config.to_dict().items()
            for key, value in values.items()]
    return pd.DataFrame(rows, columns=["section", "key", "value"]).set_index(["section", "key"])


def show_grouped(grouped: Mapping[str, Any] | None) -> None:
    """Per-group metrics (a table and Spearman per group), or a note when there are no groups."""
    if _ipython() is None:
        return
    from IPython.display import Markdown, display

    from gatrank.plots import metrics_bars

    if not grouped or not grouped.get("per_group"):
        display(Markdown("The manifest has no `group` column (or no group with two or more "
                         "graphs in this split): metrics are over the whole split."))
        return
    table = pd.DataFrame.from_dict(grouped["per_group"], orient="index")
    display(Markdown(f"{len(table)} groups; mean over groups: "
                     + ", ".join(f"{k} {v:.4f}" for k, v in grouped["mean"].items())))
    display(sortable_table(table.reset_index(names="group")))
    display(metrics_bars(table[["spearman"]].T, title="Spearman per group"))


_SORT_JS = (
    "(function(){var t=document.getElementById('%s');if(!t){return;}"
    "t.querySelectorAll('th').forEach(function(th,i){th.style.cursor='pointer';"
    "th.title='click to sort';th.addEventListener('click',function(){"
    "var b=t.tBodies[0],rows=Array.from(b.rows),asc=th.dataset.asc!=='1';"
    "rows.sort(function(a,c){var x=a.cells[i].textContent,y=c.cells[i].textContent,"
    "p=parseFloat(x),q=parseFloat(y);var r=(!isNaN(p)&&!isNaN(q))?p-q:x.localeCompare(y);"
    "return asc?r:-r;});th.dataset.asc=asc?'1':'0';rows.forEach(function(r){b.appendChild(r);});"
    "});});})();"
)


def sortable_table(df: pd.DataFrame, *, max_height: int = 420, float_format: str = "{:.4g}"):
    """An HTML table whose columns sort on a click (plain JavaScript, no CDN), scrollable.

    Returns an ``IPython.display.HTML`` object; the plain-text fallback is the DataFrame.
    """
    from IPython.display import HTML

    if df.empty:
        return HTML("<p><em>(no rows)</em></p>")
    tid = f"gatrank-table-{uuid.uuid4().hex[:12]}"
    table = df.to_html(index=False, table_id=tid, border=0, na_rep="",
                       float_format=lambda v: float_format.format(v))
    return HTML(f"<div style='max-height:{max_height}px;overflow:auto'>{table}</div>"
                f"<script type='text/javascript'>{_SORT_JS % tid}</script>")


# --------------------------------------------------------------------------- live curves


class LiveCurves:
    """A ``train(callbacks=[...])`` callback that keeps the history and redraws a figure in place.

    In JupyterLab the curves are a plotly ``FigureWidget`` whose traces are updated while
    training runs (at most every ``min_interval_s``), over the widget comm: the plotly mime
    renderer does not redraw on ``update_display_data`` (plotly/plotly.py#3053), so a display
    handle alone would freeze at the first frame. :meth:`finish` then replaces the widget with the
    final static figure, which is what papermill, nbconvert and ``gatrank suite`` keep (a headless
    kernel has no front end to sync a widget to). Without ``anywidget`` (which plotly's
    ``FigureWidget`` needs) the figure is redrawn through the display handle instead.

    Args:
        builder: ``history -> go.Figure`` (default :func:`gatrank.plots.training_curves`).
        min_interval_s: least time between two redraws while training runs.
        **kwargs: passed to ``builder``.
    """

    def __init__(self, builder: Callable[..., Any] | None = None, *, min_interval_s: float = 1.0,
                 **kwargs: Any) -> None:
        from gatrank.plots import training_curves

        self.builder = builder or training_curves
        self.kwargs = kwargs
        self.min_interval_s = min_interval_s
        self.history: list[dict[str, Any]] = []
        self.widget: Any = None
        """The ``FigureWidget`` shown while training runs (None before the first record)."""
        self._handle = None
        self._last = 0.0

    def __call__(self, record: dict[str, Any]) -> None:
        self.history.append(record)
        if time.perf_counter() - self._last >= self.min_interval_s:
            self._draw()

    def _draw(self) -> None:
        self._last = time.perf_counter()
        if _ipython() is None or not self.history:
            return
        fig = self.builder(self.history, **self.kwargs)
        if self.widget is None and self._handle is None:
            self.widget = _figure_widget(fig)
            if self.widget is not None:
                from IPython.display import display

                self._handle = display(self.widget, display_id=True)
                return
        if self.widget is not None:
            _sync_widget(self.widget, fig)
        else:
            self._handle = show(fig, self._handle)

    def finish(self) -> None:
        """Leave the final static figure in place of the live one (whatever the time since the
        last redraw)."""
        if _ipython() is None or not self.history:
            return
        self._last = time.perf_counter()
        self._handle = show(self.builder(self.history, **self.kwargs), self._handle)
        if self.widget is not None:
            self.widget.close()  # its front-end view is gone; free the comm
            self.widget = None


def _figure_widget(fig: Any) -> Any:
    """``go.FigureWidget(fig)``, or None where plotly cannot make one (no ``anywidget``)."""
    import plotly.graph_objects as go

    try:
        return go.FigureWidget(fig)
    except ImportError as exc:
        logger.info("live curves redraw through a display handle: %s", exc)
        return None


def _sync_widget(widget: Any, fig: Any) -> None:
    """Make ``widget`` show ``fig``: new points in place, traces replaced if their count changed."""
    with widget.batch_update():
        if len(widget.data) == len(fig.data):
            for old, new in zip(widget.data, fig.data):
                old.update(new.to_plotly_json())
        else:
            widget.data = ()
            widget.add_traces(fig.data)
        widget.update_layout(fig.layout.to_plotly_json())


# --------------------------------------------------------------------------- widgets


def _molecule(graph: Any):
    """The RDKit molecule of a graph made from SMILES, when its atoms match the nodes."""
    smiles = getattr(graph, "smiles", "") or ""
    if not smiles:
        return None
    from rdkit import Chem

    mol = Chem.MolFromSmiles(smiles)
    return mol if mol is not None and mol.GetNumAtoms() == int(graph.num_nodes) else None


def node_labels(graph: Any) -> list[str]:
    """Element symbols for a molecule's atoms (from its SMILES), else node indices."""
    mol = _molecule(graph)
    if mol is not None:
        return [a.GetSymbol() for a in mol.GetAtoms()]
    return [str(i) for i in range(int(graph.num_nodes))]


def draw_graph(graph: Any, title: str = ""):
    """A figure of one graph (:func:`gatrank.plots.graph_drawing`): molecules in RDKit's 2D
    depiction with element labels, other graphs in a spring layout."""
    from gatrank.plots import graph_drawing

    mol = _molecule(graph)
    positions = None
    if mol is not None:
        from rdkit.Chem import rdDepictor

        rdDepictor.Compute2DCoords(mol)
        conf = mol.GetConformer()
        positions = np.array([[conf.GetAtomPosition(i).x, conf.GetAtomPosition(i).y]
                              for i in range(mol.GetNumAtoms())])
    title = title or f"{getattr(graph, 'gid', '')}: y = {float(graph.y.reshape(-1)[0]):.4g}"
    return graph_drawing(graph.x.numpy(), graph.edge_index.numpy(), title=title,
                         node_labels=node_labels(graph), positions=positions)


def sample_browser(graphs: Any):
    """An ipywidgets browser: pick a sample (sorted by id) to draw it with its target and
    features. Returns the widget (display it as a cell's last expression)."""
    import ipywidgets as widgets
    from IPython.display import display

    table = graphs.table
    options = [(f"{table['id'].iloc[i]}  (y={table['y'].iloc[i]:.4g}, "
                f"{table['num_nodes'].iloc[i]} nodes)", i) for i in range(len(table))]
    pick = widgets.Dropdown(options=options, value=0, description="sample",
                            layout=widgets.Layout(width="60%"))
    step = widgets.IntSlider(value=0, min=0, max=max(len(table) - 1, 0), description="index",
                             continuous_update=False)
    widgets.jslink((pick, "index"), (step, "value"))
    out = widgets.Output()

    def draw(change: Any = None) -> None:
        i = pick.value
        g = graphs[i]
        row = table.iloc[i]
        out.clear_output(wait=True)
        with out:
            title = f"{row['id']}: y = {float(row['y']):.4g}"
            if isinstance(row.get("smiles"), str):
                title += f"<br><sup>{html.escape(row['smiles'])}</sup>"
            show(draw_graph(g, title))
            x = pd.DataFrame(g.x.numpy())
            used = x.columns[(x != 0).any()]
            display(x[used].rename(columns=lambda c: f"f{c}").head(60))

    pick.observe(draw, names="value")
    draw()
    return widgets.VBox([widgets.HBox([pick, step]), out])




def epoch_explorer(history: Sequence[Mapping[str, Any]], prefix: str = ""):
    """A slider over logged epochs showing the runbook's verdict as if training stopped there."""
    import ipywidgets as widgets
    from IPython.display import display

    from gatrank.checks.verdict import evaluate_verdict

    epochs = [int(h["epoch"]) for h in history]
    slider = widgets.SelectionSlider(options=epochs, value=epochs[-1], description="epoch",
                                     continuous_update=False,
                                     layout=widgets.Layout(width="70%"))
    out = widgets.Output()

    def draw(change: Any = None) -> None:
        k = epochs.index(slider.value) + 1
        v = evaluate_verdict(list(history[:k]), prefix=prefix)
        out.clear_output(wait=True)
        with out:
            display(checks_table([dict(vars(c)) for c in v.checks]).assign(
                verdict=v.label).drop(columns="detail"))

    slider.observe(draw, names="value")
    draw()
    return widgets.VBox([slider, out])


def topk_explorer(predictions: pd.DataFrame, k_max: int = 50):
    """A slider over k showing NDCG@k and the model's top-k graphs (by score) with their
    true rank."""
    import ipywidgets as widgets
    from IPython.display import Markdown, display

    from gatrank.metrics import ndcg_at_k

    pred = predictions.assign(true_rank=predictions["y"].rank(ascending=False, method="min"))
    ranked = pred.sort_values("score", ascending=False, kind="stable")
    slider = widgets.IntSlider(value=min(10, len(pred)), min=1, max=max(1, min(k_max, len(pred))),
                               description="k", continuous_update=False)
    out = widgets.Output()

    def draw(change: Any = None) -> None:
        k = slider.value
        out.clear_output(wait=True)
        with out:
            hits = int((ranked["true_rank"].head(k) <= k).sum())
            display(Markdown(f"NDCG@{k} = {ndcg_at_k(pred['score'], pred['y'], k):.4f}; "
                             f"{hits} of the top {k} by score are in the true top {k}"))
            display(ranked.head(k).drop(columns=["residual"], errors="ignore"))

    slider.observe(draw, names="value")
    draw()
    return widgets.VBox([slider, out])
