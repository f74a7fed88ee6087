"""Plotly figure builders. Pure functions: data in, figure out; nothing is shown or written."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

__all__ = ["scatter_pred_vs_true"]


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
            customdata=list(zip(*custom)),
            hovertemplate=hover + "<extra></extra>",
            name="graphs",
        )
    )
    fig.update_layout(title=title, xaxis_title="true target y", yaxis_title="predicted score",
                      template="plotly_white", height=450)
    return fig
