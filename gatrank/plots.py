"""Plotly figure builders. Pure functions: data in, figure out; nothing is shown or written.

Threshold lines come from :data:`gatrank.checks.verdict.THRESHOLDS` and are drawn as line
traces (not shapes) so they stay in data coordinates on log axes and show their rule on hover.
Colours: green dashed = pass criterion, green dotted = the runbook's "ideally", red dotted = red
flag.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.colors
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from gatrank.checks.verdict import THRESHOLDS
from gatrank.losses import LN2

__all__ = [
    "scatter_pred_vs_true",
    "training_curves",
    "layer_grad_norms",
    "embedding_spread",
    "signal_trace",
    "histogram",
    "size_degree_histograms",
    "feature_spread",
    "loss_vs_gap",
    "per_batch_values",
    "residuals",
    "metrics_bars",
    "graph_drawing",
]

_PASS = {"color": "#2ca02c", "dash": "dash", "width": 1.2}
_IDEAL = {"color": "#2ca02c", "dash": "dot", "width": 1.2}
_FLAG = {"color": "#d62728", "dash": "dot", "width": 1.2}
_REF = {"color": "#7f7f7f", "dash": "dash", "width": 1.2}
_TRAIN = "#1f77b4"
_VAL = "#ff7f0e"
_TEMPLATE = "plotly_white"


def scatter_pred_vs_true(predictions: pd.DataFrame, title: str = "Predicted vs true") -> go.Figure:
    """Scatter of ``score`` against ``y``; hover shows the id and, for molecules, the SMILES.

    Args:
        predictions: columns ``id``, ``y``, ``score`` and optionally ``smiles``, ``group``.
    """
    custom = [predictions["id"].astype(str)]
    hover = "id %{customdata[0]}<br>y %{x:.4g}<br>score %{y:.4g}"
    if "smiles" in predictions:
        custom.append(predictions["smiles"].astype(str))
        hover += "<br>%{customdata[1]}"
    fig = go.Figure(
        go.Scatter(
            x=predictions["y"],
            y=predictions["score"],
            mode="markers",
            marker={"size": 6, "opacity": 0.7},
            customdata=list(zip(*custom, strict=True)),
            hovertemplate=hover + "<extra></extra>",
            name="graphs",
        )
    )
    fig.update_layout(title=title, xaxis_title="true target y", yaxis_title="predicted score",
                      template=_TEMPLATE, height=450)
    return fig


def _hline(fig: go.Figure, y: float, x_max: float, style: dict, label: str,
           row: int | None = None, col: int | None = None) -> None:
    """A horizontal threshold line from epoch 0 to ``x_max``, labelled on hover."""
    fig.add_trace(
        go.Scatter(x=[0, x_max], y=[y, y], mode="lines", line=style, name=label,
                   hovertemplate=f"{label}<extra></extra>", showlegend=False),
        row=row, col=col,
    )


def _series(history: Sequence[Mapping[str, Any]], key: str) -> tuple[list, list]:
    pts = [(h["epoch"], h[key]) for h in history if key in h and h[key] is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def _positive(values: Sequence[float]) -> list[float | None]:
    """Log axes cannot show zeros: keep them as gaps rather than dropping the whole trace."""
    return [v if v is not None and v > 0 else None for v in values]


def training_curves(
    history: Sequence[Mapping[str, Any]],
    thresholds: Mapping[str, float] | None = None,
    *,
    title: str = "Training curves",
    loss_reference: float | None = LN2,
) -> go.Figure:
    """The runbook's logged metrics against epoch with its thresholds drawn.

    Panels: loss (with ``ln 2``, the loss of a constant model), pairwise accuracy, Spearman,
    score mean, score std (log) and gradient norm (log). ``val_*`` keys, when present, are drawn
    dashed beside the training values.

    Args:
        history: records as :func:`gatrank.training.train` logs them (``epoch``, ``loss``,
            ``pairwise_accuracy``, ``spearman``, ``score_mean``, ``score_std``, ``grad_norm``).
        thresholds: defaults to :data:`gatrank.checks.verdict.THRESHOLDS`.
        loss_reference: a reference loss to draw (``None``: none, e.g. for a user loss).
    """
    t = dict(THRESHOLDS if thresholds is None else thresholds)
    panels = [
        ("loss", "loss", False),
        ("pairwise_accuracy", "pairwise accuracy", False),
        ("spearman", "Spearman", False),
        ("score_mean", "score mean", False),
        ("score_std", "score std (log)", True),
        ("grad_norm", "gradient norm (log)", True),
    ]
    fig = make_subplots(rows=2, cols=3, subplot_titles=[p[1] for p in panels],
                        horizontal_spacing=0.07, vertical_spacing=0.14)
    x_max = max([h["epoch"] for h in history], default=1)
    for i, (key, label, log) in enumerate(panels):
        row, col = i // 3 + 1, i % 3 + 1
        for prefix, colour, dash, name in (("", _TRAIN, "solid", "train"),
                                           ("val_", _VAL, "dash", "validation")):
            x, y = _series(history, prefix + key)
            if not x:
                continue
            fig.add_trace(
                go.Scatter(x=x, y=_positive(y) if log else y, mode="lines+markers",
                           marker={"size": 4}, line={"color": colour, "dash": dash}, name=name,
                           legendgroup=name, showlegend=i == 0 or (bool(prefix) and i == 1),
                           hovertemplate=f"{name} {label}: %{{y:.4g}} at epoch %{{x}}"
                                         "<extra></extra>"),
                row=row, col=col,
            )
        if log:
            fig.update_yaxes(type="log", row=row, col=col)
    if loss_reference is not None:
        _hline(fig, loss_reference, x_max, _REF, f"constant model: loss = {loss_reference:.4f}",
               1, 1)
    _hline(fig, t["pairwise_accuracy"], x_max, _PASS, f"pass: > {t['pairwise_accuracy']}", 1, 2)
    _hline(fig, t["pairwise_accuracy_ideal"], x_max, _IDEAL,
           f"ideally > {t['pairwise_accuracy_ideal']}", 1, 2)
    _hline(fig, t["flag_pairwise_accuracy"], x_max, _FLAG,
           f"red flag: ~0.5-{t['flag_pairwise_accuracy']} (random)", 1, 2)
    _hline(fig, t["spearman"], x_max, _PASS, f"pass: > {t['spearman']}", 1, 3)
    _hline(fig, t["spearman_ideal"], x_max, _IDEAL, f"ideally > {t['spearman_ideal']}", 1, 3)
    _hline(fig, t["flag_spearman"], x_max, _FLAG,
           f"red flag: ~0-{t['flag_spearman']} (no correlation)", 1, 3)
    _hline(fig, t["score_std"], x_max, _PASS, f"pass: > {t['score_std']}", 2, 2)
    _hline(fig, t["flag_score_std"], x_max, _FLAG,
           f"red flag: < {t['flag_score_std']} (collapsed)", 2, 2)
    _hline(fig, t["grad_norm"], x_max, _PASS, f"pass: > {t['grad_norm']}", 2, 3)
    _hline(fig, t["flag_grad_norm"], x_max, _FLAG, f"red flag: ~0 (< {t['flag_grad_norm']})",
           2, 3)
    fig.update_xaxes(title_text="epoch", row=2)
    fig.update_layout(title=title, template=_TEMPLATE, height=560,
                      legend={"orientation": "h", "y": -0.12}, margin={"t": 70})
    return fig


def layer_grad_norms(
    history: Sequence[Mapping[str, Any]], threshold: float | None = None
) -> go.Figure:
    """Gradient norm per layer (``grad_norm_per_layer``) against epoch, log scale.

    A layer stuck at zero is frozen or cut off from the loss; a layer far below the others is
    where gradients vanish.
    """
    thr = THRESHOLDS["grad_norm"] if threshold is None else threshold
    layers: dict[str, tuple[list, list]] = {}
    for h in history:
        for name, v in (h.get("grad_norm_per_layer") or {}).items():
            layers.setdefault(name, ([], []))
            layers[name][0].append(h["epoch"])
            layers[name][1].append(v)
    fig = go.Figure()
    for name, (x, y) in layers.items():
        fig.add_trace(go.Scatter(x=x, y=_positive(y), mode="lines+markers", marker={"size": 4},
                                 name=name,
                                 hovertemplate=f"{name}: %{{y:.3g}} at epoch %{{x}}"
                                               "<extra></extra>"))
    _hline(fig, thr, max([h["epoch"] for h in history], default=1), _PASS, f"pass: > {thr}")
    fig.update_layout(title="Gradient norm per layer (last batch of each logged epoch)",
                      xaxis_title="epoch", yaxis_title="gradient norm", yaxis_type="log",
                      template=_TEMPLATE, height=420)
    return fig


def embedding_spread(
    history: Sequence[Mapping[str, Any]], threshold: float = 0.01
) -> go.Figure:
    """Pooled graph-embedding statistics against epoch (the runbook's Step 2C).

    ``emb_mean``/``emb_std`` are over all entries (what the runbook prints); ``emb_graph_std``
    is the spread *across graphs*, near zero when every graph gets the same embedding.
    """
    fig = go.Figure()
    for key, label in (("emb_mean", "mean"), ("emb_std", "std (all entries)"),
                       ("emb_graph_std", "std across graphs")):
        x, y = _series(history, key)
        if x:
            fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", marker={"size": 4},
                                     name=label))
    _hline(fig, threshold, max([h["epoch"] for h in history], default=1), _PASS,
           f"pass: std > {threshold}")
    fig.update_layout(title="Pooled graph embedding (Step 2C)", xaxis_title="epoch",
                      yaxis_title="value", template=_TEMPLATE, height=380)
    return fig


def _trace_points(trace: Mapping[str, Any]) -> list[tuple[str, float | None, str]]:
    """``(x, std across graphs, hover)`` per module of a ``SignalTrace.to_dict()``, then the
    scores; modules of level ``other`` (no spread across graphs) are left out."""
    pts = []
    for m in trace["modules"]:
        if m["level"] == "other" or m["graph_std"] is None:
            continue
        node = (f"<br>node std {m['node_std']:.3g} (per-graph means above)"
                if m.get("node_std") is not None else "")
        pts.append((m["path"], m["graph_std"],
                    f"{m['path']} ({m['type']})<br>{m['level']} level, shape {m['shape']}"
                    f"<br>std across graphs {m['graph_std']:.3g}"
                    f"{' (same for every graph)' if m['constant'] else ''}{node}"
                    f"<br>zeros {100 * m['zero_fraction']:.0f}%"))
    if trace.get("scores_std") is not None:
        pts.append(("scores", trace["scores_std"],
                    f"scores {trace['score_shape']}<br>std across graphs "
                    f"{trace['scores_std']:.3g}"))
    return pts


def signal_trace(init: Mapping[str, Any], end: Mapping[str, Any] | None = None, *,
                 title: str = "Where the signal dies: spread across graphs per module"
                 ) -> go.Figure:
    """Across-graph std of every module's output in forward order, then the scores (log y),
    at initialisation and, when given, at the end of training; each culprit ringed in red.

    A drop to the floor line is where every graph gets the same output: a std of 0 cannot sit
    on a log axis, so it is drawn (as an ``x``) one decade below the smallest positive value.

    Args:
        init, end: ``SignalTrace.to_dict()`` of :func:`gatrank.doctor.trace.signal_trace` on
            the same batch (node-level modules show the spread of their per-graph means).
    """
    traces = [("at initialisation", init, _TRAIN), ("after training", end, _VAL)]
    traces = [(name, t, colour, _trace_points(t)) for name, t, colour in traces if t]
    order = list(dict.fromkeys(x for *_, pts in traces for x, _, _ in pts
                               if x != "scores")) + ["scores"]
    positive = [v for *_, pts in traces for _, v, _ in pts if v and v > 0]
    floor = 10 ** (np.floor(np.log10(min(positive))) - 1) if positive else 1e-6
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[order[0], order[-1]], y=[floor, floor], mode="lines",
                             line=_REF, name="std 0: the same for every graph",
                             hovertemplate="std 0 across graphs (drawn here)<extra></extra>"))
    for name, t, colour, pts in traces:
        fig.add_trace(go.Scatter(
            x=[x for x, _, _ in pts], y=[v if v > 0 else floor for _, v, _ in pts],
            mode="lines+markers", name=name, line={"color": colour},
            marker={"size": [7 if v > 0 else 11 for _, v, _ in pts],
                    "symbol": ["circle" if v > 0 else "x" for _, v, _ in pts]},
            hovertext=[h for _, _, h in pts], hoverinfo="text"))
        c = t.get("culprit")
        if c:
            x = c["path"] if c["where"] == "module" else "scores"
            y = next((v for px, v, _ in pts if px == x), 0.0)
            fig.add_trace(go.Scatter(
                x=[x], y=[y if y > 0 else floor], mode="markers",
                name=f"culprit {name}: {c['cause']}",
                marker={"size": 20, "symbol": "circle-open", "color": _FLAG["color"],
                        "line": {"width": 2.5}},
                hovertext=[c["evidence"]], hoverinfo="text"))
    fig.update_xaxes(categoryorder="array", categoryarray=order, tickangle=-45)
    fig.update_layout(title=title, xaxis_title="module, in forward order",
                      yaxis_title="std across graphs (log)", yaxis_type="log",
                      template=_TEMPLATE, height=500, margin={"t": 90},
                      legend={"orientation": "h", "x": 0, "y": 1.0, "yanchor": "bottom"})
    return fig


def histogram(
    values: Sequence[float] | np.ndarray,
    *,
    title: str,
    xaxis_title: str,
    nbins: int | None = None,
    vlines: Mapping[str, float] | None = None,
) -> go.Figure:
    """A histogram with optional labelled vertical reference lines ``{label: x}``."""
    fig = go.Figure(go.Histogram(x=np.asarray(values), nbinsx=nbins, name=xaxis_title,
                                 marker={"color": _TRAIN}))
    for label, x in (vlines or {}).items():
        fig.add_vline(x=x, line=_REF, annotation_text=label, annotation_position="top")
    fig.update_layout(title=title, xaxis_title=xaxis_title, yaxis_title="count",
                      template=_TEMPLATE, height=360, bargap=0.05, showlegend=False)
    return fig


def size_degree_histograms(
    num_nodes: Sequence[int], num_edges: Sequence[int], degrees: Sequence[int]
) -> go.Figure:
    """Histograms of nodes per graph, edges per graph and node degree, side by side.

    ``num_edges`` counts directed edges as stored in ``edge_index`` (an undirected bond is 2).
    """
    fig = make_subplots(rows=1, cols=3, subplot_titles=("nodes per graph",
                                                        "edges per graph (directed)",
                                                        "node degree"))
    for i, v in enumerate((num_nodes, num_edges, degrees)):
        fig.add_trace(go.Histogram(x=np.asarray(v), marker={"color": _TRAIN}, showlegend=False),
                      row=1, col=i + 1)
    fig.update_yaxes(title_text="count", col=1)
    fig.update_layout(title="Graph size and degree", template=_TEMPLATE, height=340,
                      bargap=0.05)
    return fig


def feature_spread(stats: pd.DataFrame) -> go.Figure:
    """Per-feature std across nodes and across graphs (the graph means), one bar per feature.

    Args:
        stats: one row per feature with columns ``feature``, ``std``, ``graph_std`` and
            ``constant`` (bool), as :func:`gatrank.checks.static.feature_table` returns.
    """
    const = stats[stats["constant"]]
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=("std across nodes (red x: constant feature)",
                                        "std of the per-graph mean across graphs"))
    for row, key in ((1, "std"), (2, "graph_std")):
        fig.add_trace(go.Bar(x=stats["feature"], y=stats[key], marker={"color": _TRAIN},
                             showlegend=False, name=key,
                             hovertemplate="feature %{x}: %{y:.4g}<extra></extra>"),
                      row=row, col=1)
    fig.add_trace(go.Scatter(x=const["feature"], y=np.zeros(len(const)), mode="markers",
                             marker={"symbol": "x", "color": "#d62728", "size": 5},
                             name="constant", showlegend=False,
                             hovertemplate="feature %{x}: constant<extra></extra>"),
                  row=1, col=1)
    fig.update_xaxes(title_text="feature index", row=2, col=1)
    fig.update_layout(title="Per-feature spread", template=_TEMPLATE, height=480, bargap=0.1)
    return fig


def loss_vs_gap(curves: pd.DataFrame, *, reference: float | None = LN2) -> go.Figure:
    """Loss and its gradient against the score gap of one correctly ordered pair.

    Args:
        curves: columns ``gap`` (s_hi - s_lo), ``loss``, ``grad`` (d loss / d s_hi) and
            ``label`` (one line per label, e.g. per temperature).
        reference: a loss level to mark at gap 0 (``ln 2`` for gatrank's loss).
    """
    palette = plotly.colors.qualitative.Plotly
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "d loss / d s_hi"))
    for i, (label, part) in enumerate(curves.groupby("label", sort=False)):
        line = {"color": palette[i % len(palette)]}
        fig.add_trace(go.Scatter(x=part["gap"], y=part["loss"], mode="lines", name=str(label),
                                 legendgroup=str(label), line=line), row=1, col=1)
        fig.add_trace(go.Scatter(x=part["gap"], y=part["grad"], mode="lines", name=str(label),
                                 legendgroup=str(label), showlegend=False, line=line),
                      row=1, col=2)
    if reference is not None:
        fig.add_trace(go.Scatter(x=[0], y=[reference], mode="markers",
                                 marker={"symbol": "x", "size": 10, "color": "black"},
                                 name=f"ln 2 = {reference:.4f} at gap 0"), row=1, col=1)
    fig.update_xaxes(title_text="score gap s_hi - s_lo (positive = correct order)")
    fig.update_layout(title="Loss and gradient against the score gap", template=_TEMPLATE,
                      height=380)
    return fig


def per_batch_values(
    values: Sequence[float], *, title: str, yaxis_title: str,
    reference: tuple[str, float] | None = None,
) -> go.Figure:
    """One marker per batch, with an optional labelled reference level ``(label, y)``."""
    x = list(range(len(values)))
    fig = go.Figure(go.Scatter(x=x, y=list(values), mode="markers+lines", marker={"size": 6},
                               line={"width": 0.5}, name="batch"))
    if reference is not None:
        _hline(fig, reference[1], max(len(values) - 1, 1), _REF, reference[0])
        fig.add_annotation(x=max(len(values) - 1, 1), y=reference[1], text=reference[0],
                           showarrow=False, yshift=10, xanchor="right")
    fig.update_layout(title=title, xaxis_title="batch", yaxis_title=yaxis_title,
                      template=_TEMPLATE, height=340, showlegend=False)
    return fig


def residuals(predictions: pd.DataFrame) -> go.Figure:
    """Residuals (score mapped to the target scale minus y) against y, and their histogram."""
    fig = make_subplots(rows=1, cols=2, column_widths=[0.65, 0.35],
                        subplot_titles=("residual against true target", "residual distribution"))
    custom = predictions["id"].astype(str)
    fig.add_trace(go.Scatter(x=predictions["y"], y=predictions["residual"], mode="markers",
                             marker={"size": 5, "opacity": 0.6}, customdata=custom,
                             hovertemplate="id %{customdata}<br>y %{x:.4g}<br>residual "
                                           "%{y:.4g}<extra></extra>", showlegend=False),
                  row=1, col=1)
    fig.add_trace(go.Histogram(x=predictions["residual"], showlegend=False,
                               marker={"color": _TRAIN}), row=1, col=2)
    fig.update_xaxes(title_text="true target y", row=1, col=1)
    fig.update_xaxes(title_text="residual", row=1, col=2)
    fig.update_layout(title="Residuals (score rescaled to y by least squares, minus y)",
                      template=_TEMPLATE, height=380)
    return fig


def metrics_bars(table: pd.DataFrame, metrics: Sequence[str] | None = None,
                 *, title: str = "Model and baselines") -> go.Figure:
    """Grouped bars: one group per metric, one bar per row of ``table`` (model, baselines)."""
    cols = [m for m in (metrics or table.columns) if m in table.columns]
    fig = go.Figure()
    for name, row in table.iterrows():
        fig.add_trace(go.Bar(x=cols, y=[row[c] for c in cols], name=str(name),
                             hovertemplate=f"{name} %{{x}}: %{{y:.4f}}<extra></extra>"))
    fig.update_layout(title=title, barmode="group", template=_TEMPLATE, height=380,
                      yaxis_title="value")
    return fig


def graph_drawing(
    x: np.ndarray,
    edge_index: np.ndarray,
    *,
    title: str = "",
    node_labels: Sequence[str] | None = None,
    positions: np.ndarray | None = None,
    seed: int = 0,
) -> go.Figure:
    """Draw one graph; hover shows each node's label, degree and non-zero features.

    Args:
        x: ``[N, F]`` node features.
        edge_index: ``[2, E]`` edges (both directions of an undirected edge are fine).
        node_labels: text per node (e.g. element symbols); default: the node index.
        positions: ``[N, 2]`` node coordinates (e.g. RDKit 2D depiction); default: a spring
            layout seeded with ``seed``.
    """
    import networkx as nx  # deferred on purpose: a heavy import only this figure needs

    n = int(x.shape[0])
    g = nx.Graph()
    g.add_nodes_from(range(n))
    g.add_edges_from({(int(a), int(b)) for a, b in np.asarray(edge_index).T if a != b})
    if positions is not None:
        pos = {i: np.asarray(positions[i], dtype=float) for i in range(n)}
    else:
        pos = nx.spring_layout(g, seed=seed) if n > 1 else {0: np.zeros(2)}
    ex, ey = [], []
    for a, b in g.edges():
        ex += [pos[a][0], pos[b][0], None]
        ey += [pos[a][1], pos[b][1], None]
    labels = list(node_labels) if node_labels is not None else [str(i) for i in range(n)]
    nz = [np.flatnonzero(row) for row in np.asarray(x)]
    hover = [
        f"node {i} ({labels[i]})<br>degree {g.degree(i)}<br>nonzero features "
        + ", ".join(f"{j}={np.asarray(x)[i, j]:.3g}" for j in nz[i][:12])
        + (" ..." if len(nz[i]) > 12 else "")
        for i in range(n)
    ]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=ex, y=ey, mode="lines", line={"color": "#999", "width": 1.5},
                             hoverinfo="skip", showlegend=False))
    fig.add_trace(go.Scatter(x=[pos[i][0] for i in range(n)], y=[pos[i][1] for i in range(n)],
                             mode="markers+text", text=labels, textposition="middle center",
                             marker={"size": 16, "color": "#cfe2f3",
                                     "line": {"color": _TRAIN, "width": 1}},
                             hovertext=hover, hoverinfo="text", showlegend=False))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, scaleanchor="x")
    fig.update_layout(title=title, template=_TEMPLATE, height=420, margin={"t": 50})
    return fig
