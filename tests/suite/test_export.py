"""gatrank.suite.export: HTML that opens offline, loading the folder's one plotly.min.js and
notebook.css (or, self contained, its own inlined copies), with an error banner on top of a failed
notebook; and the executed notebook rid of the saved state of widgets no output shows."""

from __future__ import annotations

import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import plotly.graph_objects as go
import plotly.io as pio
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from gatrank.notebook.display import RENDERER, setup
from gatrank.suite.export import NOTEBOOK_CSS, PLOTLY_JS, export_html, prune_widget_state

PLOTLY_BANNER = re.compile(r"\* plotly\.js v\d+\.\d+\.\d+")
SCRIPT_SRC = re.compile(r"<script[^>]*\ssrc\s*=\s*[\"']?([^\"' >]+)", re.I)
LINK_HREF = re.compile(r"<link[^>]*\shref\s*=\s*[\"']?([^\"' >]+)", re.I)
CSS_RULE = "--jp-layout-color0:"  # defined by JupyterLab's theme


def _package_plotly_js() -> bytes:
    import plotly

    return (Path(plotly.__file__).parent / "package_data" / "plotly.min.js").read_bytes()


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


def _assert_offline_page(html: str, external_ref: re.Pattern[str]) -> None:
    assert html.count("Plotly.newPlot(") == 3
    assert not external_ref.search(html), external_ref.search(html)
    for cdn in ("require.js", "html-manager", "MathJax.js", "mermaid.esm"):
        assert cdn not in html
    # the widget became a note, and its state (rendered by a CDN script) is gone
    assert "open the notebook in JupyterLab" in html
    assert "widget-state+json" not in html
    assert 'id="gatrank-error"' not in html


def test_export_loads_the_folders_one_plotly_js_and_nothing_from_the_network(tmp_path,
                                                                            external_ref):
    src = _notebook_with_plots(tmp_path / "nb.ipynb", n_figures=3)
    out = tmp_path / "report"
    html = export_html(src, out / "nb.html").read_text()
    assert SCRIPT_SRC.findall(html) == [PLOTLY_JS]
    assert html.index(f'src="{PLOTLY_JS}"') < html.index("Plotly.newPlot(")  # loaded first
    assert LINK_HREF.findall(html) == [NOTEBOOK_CSS]
    assert not PLOTLY_BANNER.search(html) and CSS_RULE not in html  # no inline copies
    _assert_offline_page(html, external_ref)
    js = out / PLOTLY_JS
    assert js.read_bytes() == _package_plotly_js()
    assert CSS_RULE in (out / NOTEBOOK_CSS).read_text()
    # a second report in the folder finds it there and leaves it alone (the same file, not a
    # rewrite), and no temporary file is left behind
    before = [(p.stat().st_ino, p.stat().st_mtime_ns) for p in (js, out / NOTEBOOK_CSS)]
    export_html(src, out / "again.html")
    assert [(p.stat().st_ino, p.stat().st_mtime_ns) for p in (js, out / NOTEBOOK_CSS)] == before
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["again.html", "nb.html", NOTEBOOK_CSS, PLOTLY_JS])


def test_a_stale_or_broken_plotly_js_beside_the_report_is_replaced(tmp_path):
    src = _notebook_with_plots(tmp_path / "nb.ipynb", n_figures=1)
    js = tmp_path / PLOTLY_JS
    package = _package_plotly_js()
    mid = len(package) // 2
    flipped = package[:mid] + bytes([package[mid] ^ 1]) + package[mid + 1:]  # the same size
    for stale in (b"/* plotly.js v1.0.0 */", flipped, package[:mid]):
        assert stale != package
        js.write_bytes(stale)
        export_html(src, tmp_path / "nb.html")
        assert js.read_bytes() == package


def test_self_contained_export_inlines_plotly_js_and_css_and_needs_nothing_beside_it(tmp_path,
                                                                            external_ref):
    src = _notebook_with_plots(tmp_path / "nb.ipynb", n_figures=3)
    out = tmp_path / "mail"
    html = export_html(src, out / "nb.html", self_contained=True).read_text()
    assert len(PLOTLY_BANNER.findall(html)) == 1
    assert html.index(PLOTLY_BANNER.search(html).group()) < html.index("Plotly.newPlot(")
    assert SCRIPT_SRC.findall(html) == []  # no script loaded from anywhere, sibling or remote
    assert LINK_HREF.findall(html) == [] and CSS_RULE in html
    _assert_offline_page(html, external_ref)
    assert sorted(p.name for p in out.iterdir()) == ["nb.html"]


def test_concurrent_exports_into_one_folder_leave_one_correct_plotly_js_and_css(tmp_path):
    src = _notebook_with_plots(tmp_path / "nb.ipynb", n_figures=1)
    out = tmp_path / "report"
    n = 6
    start = threading.Barrier(n)

    def export(i: int) -> str:
        start.wait()  # all at once, each finding no plotly.min.js
        return export_html(src, out / f"nb{i}.html").read_text()

    with ThreadPoolExecutor(n) as pool:
        pages = list(pool.map(export, range(n)))
    assert all(SCRIPT_SRC.findall(p) == [PLOTLY_JS] for p in pages)
    assert (out / PLOTLY_JS).read_bytes() == _package_plotly_js()
    alone = tmp_path / "alone"
    export_html(src, alone / "nb.html")
    assert (out / NOTEBOOK_CSS).read_bytes() == (alone / NOTEBOOK_CSS).read_bytes()
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [PLOTLY_JS, NOTEBOOK_CSS] + [f"nb{i}.html" for i in range(n)])  # no temporary file left


def test_export_of_a_failed_notebook_puts_the_error_on_top(tmp_path):
    src = _notebook_with_plots(tmp_path / "nb.ipynb", n_figures=1)
    html = export_html(src, tmp_path / "nb.html", error="ValueError: <planted> & co").read_text()
    banner = html.index('id="gatrank-error"')
    assert banner < html.index('class="jp-Cell')
    assert "ValueError: &lt;planted&gt; &amp; co" in html[banner:banner + 500]


def _widget_model(name: str, state: dict) -> dict:
    return {"model_name": name, "model_module": "@jupyter-widgets/controls",
            "model_module_version": "2.0.0", "state": {"_model_name": name, **state}}


def test_prune_widget_state_drops_what_no_output_shows_and_keeps_what_one_does(tmp_path):
    nb = new_notebook()
    view = new_output("display_data", data={
        "application/vnd.jupyter.widget-view+json": {"model_id": "box", "version_major": 2,
                                                     "version_minor": 0},
        "text/plain": "VBox()"})
    cell = new_code_cell("explorer")
    cell.outputs = [view]
    nb.cells = [cell]
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {
        "version_major": 2, "version_minor": 0, "state": {
            # what the shown box draws: its children, their layouts, a jslink between two
            "box": _widget_model("VBoxModel", {"children": ["IPY_MODEL_pick", "IPY_MODEL_step"],
                                               "layout": "IPY_MODEL_box_layout"}),
            "box_layout": _widget_model("LayoutModel", {}),
            "pick": _widget_model("DropdownModel", {"index": 0}),
            "step": _widget_model("IntSliderModel", {"layout": "IPY_MODEL_step_layout"}),
            "step_layout": _widget_model("LayoutModel", {}),
            "link": _widget_model("LinkModel", {"source": ["IPY_MODEL_pick", "index"],
                                                "target": ["IPY_MODEL_step", "value"]}),
            # a closed live figure (its view was replaced by a static figure) and its layout
            "live": _widget_model("AnyModel", {"_esm": "x" * 200_000,
                                               "layout": "IPY_MODEL_live_layout"}),
            "live_layout": _widget_model("LayoutModel", {}),
        }}}
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, str(path))
    size = path.stat().st_size
    assert sorted(prune_widget_state(path)) == ["AnyModel", "LayoutModel"]
    assert path.stat().st_size < size - 200_000
    kept = json.loads(path.read_text())["metadata"]["widgets"][
        "application/vnd.jupyter.widget-state+json"]["state"]
    assert sorted(kept) == ["box", "box_layout", "link", "pick", "step", "step_layout"]
    # nothing more to drop: the file is left as it is
    before = path.stat()
    assert prune_widget_state(path) == []
    assert path.stat().st_mtime_ns == before.st_mtime_ns


def test_prune_widget_state_of_a_notebook_whose_widgets_are_all_gone(tmp_path):
    nb = new_notebook()
    nb.cells = [new_code_cell("1")]
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {
        "version_major": 2, "version_minor": 0,
        "state": {"live": _widget_model("AnyModel", {"_esm": "x"})}}}
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, str(path))
    assert prune_widget_state(path) == ["AnyModel"]
    assert "widgets" not in json.loads(path.read_text())["metadata"]
    nbformat.validate(nbformat.read(str(path), as_version=4))
