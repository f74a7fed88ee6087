"""gatrank.suite.export: HTML that opens offline, with plotly.js embedded once and an error
banner on top of a failed notebook."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import plotly.graph_objects as go
import plotly.io as pio
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from gatrank.notebook.display import RENDERER, setup
from gatrank.suite.export import export_html

PLOTLY_BANNER = re.compile(r"\* plotly\.js v\d+\.\d+\.\d+")


def _figure_output(title: str) -> dict:
    setup()
    fig = go.Figure(go.Scatter(x=[1, 2, 3], y=[3, 1, 2]), layout={"title": title})
    bundle = pio.renderers[RENDERER].to_mimebundle(fig.to_dict())
    return new_output("display_data", data=bundle)


def _notebook_with_plots(path: Path, n_figures: int = 2) -> Path:
    nb = new_notebook()
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    widget = new_output("display_data", data={
        "application/vnd.jupyter.widget-view+json": {"model_id": "abc", "version_major": 2,
                                                     "version_minor": 0},
        "text/plain": "IntSlider(value=3)"})
    cells = [new_markdown_cell("# A report")]
    for i in range(n_figures):
        cell = new_code_cell(f"fig{i}")
        cell.outputs = [_figure_output(f"figure {i}")]
        cells.append(cell)
    slider = new_code_cell("slider")
    slider.outputs = [widget]
    nb.cells = cells + [slider]
    nbformat.write(nb, str(path))
    return path


def test_export_embeds_plotly_once_and_loads_nothing_from_the_network(tmp_path, external_ref):
    src = _notebook_with_plots(tmp_path / "nb.ipynb", n_figures=3)
    html = export_html(src, tmp_path / "nb.html").read_text()
    assert len(PLOTLY_BANNER.findall(html)) == 1
    assert html.count("Plotly.newPlot(") == 3
    assert not external_ref.search(html), external_ref.search(html)
    for cdn in ("require.js", "html-manager", "MathJax.js", "mermaid.esm"):
        assert cdn not in html
    # the widget became a note, and its state (rendered by a CDN script) is gone
    assert "open the notebook in JupyterLab" in html
    assert "widget-state+json" not in html
    assert 'id="gatrank-error"' not in html


def test_export_of_a_failed_notebook_puts_the_error_on_top(tmp_path):
    src = _notebook_with_plots(tmp_path / "nb.ipynb", n_figures=1)
    html = export_html(src, tmp_path / "nb.html", error="ValueError: <planted> & co").read_text()
    banner = html.index('id="gatrank-error"')
    assert banner < html.index('class="jp-Cell')
    assert "ValueError: &lt;planted&gt; &amp; co" in html[banner:banner + 500]
