"""gatrank.notebook.display: the offline plotly renderer."""

from __future__ import annotations

import plotly.graph_objects as go
import plotly.io as pio

from gatrank.notebook.display import RENDERER, setup


def test_figure_html_without_plotly_says_so_instead_of_failing():
    setup()
    fig = go.Figure(go.Scatter(x=[1, 2, 3], y=[3, 1, 2]), layout={"title": "t"})
    html = pio.renderers[RENDERER].to_mimebundle(fig.to_dict())["text/html"]
    assert "if(!window.Plotly)" in html and "plotly.js is not loaded" in html
    assert "<script src" not in html
