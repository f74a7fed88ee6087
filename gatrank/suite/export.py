"""Executed notebooks as HTML that opens offline: plotly.js embedded once, no CDN, no require.js,
widgets replaced by a note, and a red banner on top of a notebook that failed.

nbformat and nbconvert are imported inside :func:`export_html`, on purpose: they take seconds to
import and only an export needs them.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from jinja2 import DictLoader
from plotly.offline import get_plotlyjs

from gatrank.io import atomic_write_text

__all__ = ["export_html"]

_TEMPLATE = r"""
{%- extends 'index.html.j2' -%}
{%- block html_head_js -%}
<script type="text/javascript">{{ resources.gatrank_plotly_js }}</script>
{%- endblock html_head_js -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block extra_css -%}
<style type="text/css">
.gatrank-banner { margin: 1em 2em; padding: 0.8em 1.2em; border-radius: 6px;
  font-family: system-ui, sans-serif; font-size: 1.1em; }
.gatrank-banner.error { background: #ffebe9; border: 2px solid #cf222e; color: #82071e; }
.gatrank-banner a { color: inherit; }
</style>
{%- endblock extra_css -%}
{%- block body_header -%}
{{ super() }}
{%- if resources.gatrank_error %}
<div class="gatrank-banner error" id="gatrank-error">
<strong>This notebook failed.</strong> {{ resources.gatrank_error | e }}
<br><a href="#papermill-error-cell">Go to the failing cell</a> &middot;
<a href="index.html">Back to the suite report</a>
</div>
{%- endif %}
{%- endblock body_header -%}
"""

_WIDGET_NOTE = (
    "<div style='color:#57606a;font-style:italic'>(interactive widget: open the notebook in "
    "JupyterLab to use it)</div>"
)


def _static_copy(nb: Any) -> Any:
    """A copy without ipywidgets state or views: their offline renderer needs a CDN script,
    so each widget becomes a short note instead."""
    nb = copy.deepcopy(nb)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if "application/vnd.jupyter.widget-view+json" in data:
                out["data"] = {"text/html": _WIDGET_NOTE, "text/plain": "(interactive widget)"}
    return nb


def export_html(ipynb: str | Path, html_path: str | Path, *, error: str = "") -> Path:
    """Export an executed notebook to HTML that opens offline with working plotly figures.

    plotly.js is embedded once in the page head; require.js, MathJax, mermaid and the ipywidgets
    manager (all CDN-loaded by nbconvert's ``lab`` template) are left out. ``error`` adds a red
    banner at the top.
    """
    import nbformat  # deferred: seconds to import (see the module docstring)
    from nbconvert import HTMLExporter

    nb = _static_copy(nbformat.read(str(ipynb), as_version=4))
    exporter = HTMLExporter(template_name="lab",
                            extra_loaders=[DictLoader({"gatrank_report.html.j2": _TEMPLATE})],
                            template_file="gatrank_report.html.j2")
    body, _ = exporter.from_notebook_node(
        nb, resources={"gatrank_plotly_js": get_plotlyjs(), "gatrank_error": error}
    )
    atomic_write_text(html_path, body)
    return Path(html_path)
