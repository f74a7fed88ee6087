"""Interactive pieces of the notebooks: :class:`LiveCurves` (training curves redrawn in place
while training runs), graph drawings, and ipywidgets explorers (a sample browser, an epoch
slider over the verdict, a top-k slider).

ipywidgets and RDKit are imported inside the functions that use them, on purpose: a notebook that
draws no molecule and opens no explorer does not pay for them.
"""

from __future__ import annotations

import html
import logging
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from IPython.display import Markdown, display

from gatrank.checks.steps import training_checks
from gatrank.checks.verdict import evaluate_verdict
from gatrank.metrics import ndcg_at_k
from gatrank.notebook.display import checks_table, in_ipython, show
from gatrank.plots import graph_drawing, training_curves
from gatrank.project import HEADLESS_ENV

__all__ = [
    "LiveCurves",
    "node_labels",
    "draw_graph",
    "sample_browser",
    "epoch_explorer",
    "topk_explorer",
]

logger = logging.getLogger(__name__)


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

    In a kernel started with ``GATRANK_HEADLESS=1`` (``gatrank suite`` sets it: no front end
    will ever show a redraw) only :meth:`finish` draws: redrawing the six-panel widget after
    every logged epoch took a headless suite's 04_full_train training cell from 31 s to 43 s and
    03_overfit's from 12 s to 21 s (2 cores, two notebooks at once).

    Args:
        builder: ``history -> go.Figure`` (default :func:`gatrank.plots.training_curves`).
        min_interval_s: least time between two redraws while training runs.
        **kwargs: passed to ``builder``.
    """

    def __init__(self, builder: Callable[..., Any] | None = None, *, min_interval_s: float = 1.0,
                 **kwargs: Any) -> None:
        self.builder = builder or training_curves
        self.kwargs = kwargs
        self.min_interval_s = min_interval_s
        self.history: list[dict[str, Any]] = []
        self.widget: Any = None
        """The ``FigureWidget`` shown while training runs (None before the first record)."""
        self._handle = None
        self._last = 0.0
        self.live = os.environ.get(HEADLESS_ENV) != "1"
        """Redraw while training runs (False in a headless kernel: see above)."""

    def __call__(self, record: dict[str, Any]) -> None:
        self.history.append(record)
        if self.live and time.perf_counter() - self._last >= self.min_interval_s:
            self._draw()

    def _draw(self) -> None:
        self._last = time.perf_counter()
        if not in_ipython() or not self.history:
            return
        fig = self.builder(self.history, **self.kwargs)
        if self.widget is None and self._handle is None:
            self.widget = _figure_widget(fig)
            if self.widget is not None:
                self._handle = display(self.widget, display_id=True)
                return
        if self.widget is not None:
            _sync_widget(self.widget, fig)
        else:
            self._handle = show(fig, self._handle)

    def finish(self) -> None:
        """Leave the final static figure in place of the live one (whatever the time since the
        last redraw)."""
        if not in_ipython() or not self.history:
            return
        self._last = time.perf_counter()
        self._handle = show(self.builder(self.history, **self.kwargs), self._handle)
        if self.widget is not None:
            self.widget.close()  # its front-end view is gone; free the comm
            self.widget = None


def _figure_widget(fig: Any) -> Any:
    """``go.FigureWidget(fig)``, or None where plotly cannot make one (no ``anywidget``)."""
    try:
        return go.FigureWidget(fig)
    except ImportError as exc:
        logger.info("live curves redraw through a display handle: %s", exc)
        return None


def _sync_widget(widget: Any, fig: Any) -> None:
    """Make ``widget`` show ``fig``: new points in place, traces replaced if their count changed."""
    with widget.batch_update():
        if len(widget.data) == len(fig.data):
            for old, new in zip(widget.data, fig.data, strict=True):
                old.update(new.to_plotly_json())
        else:
            widget.data = ()
            widget.add_traces(fig.data)
        widget.update_layout(fig.layout.to_plotly_json())


# --------------------------------------------------------------------------- graphs


def _molecule(graph: Any):
    """The RDKit molecule of a graph made from SMILES, when its atoms match the nodes."""
    smiles = getattr(graph, "smiles", "") or ""
    if not smiles:
        return None
    from rdkit import Chem  # deferred: only graphs made from SMILES need RDKit

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
    mol = _molecule(graph)
    positions = None
    if mol is not None:
        from rdkit.Chem import rdDepictor  # deferred: only molecules need RDKit

        rdDepictor.Compute2DCoords(mol)
        conf = mol.GetConformer()
        positions = np.array([[conf.GetAtomPosition(i).x, conf.GetAtomPosition(i).y]
                              for i in range(mol.GetNumAtoms())])
    title = title or f"{getattr(graph, 'gid', '')}: y = {float(graph.y.reshape(-1)[0]):.4g}"
    return graph_drawing(graph.x.numpy(), graph.edge_index.numpy(), title=title,
                         node_labels=node_labels(graph), positions=positions)


# --------------------------------------------------------------------------- explorers


def by_id(ids: Sequence[Any]) -> list[int]:
    """Positions of ``ids`` in ascending id order, numbers inside ids compared as numbers
    (``g2`` before ``g10``; ``CHEMBL95`` before ``CHEMBL101``)."""
    ids = list(ids)

    def key(i: int) -> list[tuple[int, Any]]:
        parts = re.split(r"(\d+)", str(ids[i]))
        return [(0, int(p)) if p.isdigit() else (1, p) for p in parts if p]

    return sorted(range(len(ids)), key=key)


def sample_browser(graphs: Any):
    """An ipywidgets browser: pick a sample (sorted by id) to draw it with its target and
    features. Returns the widget (display it as a cell's last expression)."""
    import ipywidgets as widgets  # deferred: only the explorers need ipywidgets

    table = graphs.table
    options = [(f"{table['id'].iloc[i]}  (y={table['y'].iloc[i]:.4g}, "
                f"{table['num_nodes'].iloc[i]} nodes)", i) for i in by_id(table["id"])]
    pick = widgets.Dropdown(options=options, value=options[0][1] if options else None,
                            description="sample",
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


HELD_OUT_SIGNALS = ("validation score std > 0.1 (not collapsing), validation pairwise accuracy "
                    "above the first logged epoch's, median gradient norm > 0.01")
"""What the held-out epoch explorer judges: the runbook's "Monitor training" signals, the ones
04_full_train's verdict checks, not the overfit test's thresholds (those are for memorizing a
small training set; held-out data is not expected to reach them)."""


def held_out_verdict(history: Sequence[Mapping[str, Any]], epoch: int
                     ) -> tuple[str, pd.DataFrame]:
    """04_full_train's monitoring checks as if training had stopped at ``epoch`` (the checks of
    :func:`gatrank.checks.steps.training_checks`, that epoch taken as the best): one verdict
    line and the checks as a table (check, measured, result; no index)."""
    k = next(i for i, h in enumerate(history) if int(h["epoch"]) == int(epoch)) + 1
    checks = training_checks(list(history[:k]), {"best_epoch": int(epoch)})
    table = checks_table(checks).drop(columns=["kind", "detail"]).set_index("check")
    failed = [c["name"] for c in checks if c["kind"] == "pass" and not c["ok"]]
    line = (f"epoch {epoch}: " + ("the held-out signals pass" if not failed else
                                  f"not yet: {', '.join(failed)}")
            + f" (judged on: {HELD_OUT_SIGNALS})")
    return line, table


def epoch_explorer(history: Sequence[Mapping[str, Any]], prefix: str = ""):
    """A slider over logged epochs showing a verdict as if training stopped there.

    With ``prefix="val_"`` (held-out metrics, 04_full_train): the held-out signals of
    :func:`held_out_verdict`. Otherwise (an overfit run, or a history without validation
    metrics, such as a log of :class:`gatrank.Monitor`): the runbook's overfit-test criteria on
    the training metrics, which that run is meant to meet.
    """
    import ipywidgets as widgets  # deferred: only the explorers need ipywidgets

    if prefix and not all(f"{prefix}pairwise_accuracy" in h for h in history):
        logger.info("the history has no %spairwise_accuracy: the verdict at each epoch is on "
                    "the training metrics", prefix)
        prefix = ""

    epochs = [int(h["epoch"]) for h in history]
    slider = widgets.SelectionSlider(options=epochs, value=epochs[-1], description="epoch",
                                     continuous_update=False,
                                     layout=widgets.Layout(width="70%"))
    out = widgets.Output()

    def draw(change: Any = None) -> None:
        if prefix:
            line, table = held_out_verdict(history, slider.value)
        else:
            v = evaluate_verdict(list(history[:epochs.index(slider.value) + 1]))
            line = (f"epoch {slider.value}: overfit test {v.label} (the runbook's pass "
                    "criteria on the training metrics)")
            table = checks_table(v.checks).drop(columns=["detail"]).set_index("check")
        out.clear_output(wait=True)
        with out:
            if in_ipython():
                display(Markdown(f"**{html.escape(line)}**"))
            else:  # a Markdown object prints as its repr outside a kernel
                print(line)
            display(table)

    slider.observe(draw, names="value")
    draw()
    return widgets.VBox([slider, out])


def topk_explorer(predictions: pd.DataFrame, k_max: int = 50):
    """A slider over k showing NDCG@k and the model's top-k graphs (by score) with their
    true rank."""
    import ipywidgets as widgets  # deferred: only the explorers need ipywidgets

    pred = predictions.assign(
        true_rank=predictions["y"].rank(ascending=False, method="min").astype(int))
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
