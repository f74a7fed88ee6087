"""Executed notebooks as HTML that opens offline: plotly.js from the installed plotly package (one
``plotly.min.js`` shared by a folder's reports, or inlined), no CDN, no require.js, widgets
replaced by a note, and a red banner on top of a notebook that failed.

nbformat and nbconvert are imported inside the functions that need them, on purpose: they take
seconds to import and only an export needs them.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
from pathlib import Path
from typing import Any

from jinja2 import DictLoader
from plotly.offline import get_plotlyjs

from gatrank.io import atomic_write_bytes, atomic_write_text

__all__ = ["PLOTLY_JS", "export_html", "write_plotly_js", "prune_widget_state"]

logger = logging.getLogger(__name__)

PLOTLY_JS = "plotly.min.js"
"""File name of the plotly.js that reports exported with ``self_contained=False`` load from
their own folder."""

_TEMPLATE = r"""
{%- extends 'index.html.j2' -%}
{%- block html_head_js -%}
{%- if resources.gatrank_plotly_src %}
<script type="text/javascript" src="{{ resources.gatrank_plotly_src }}"></script>
{%- else %}
<script type="text/javascript">{{ resources.gatrank_plotly_js }}</script>
{%- endif %}
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
_WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
_WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


@functools.cache
def _plotly_js_bytes() -> bytes:
    """The installed plotly package's plotly.js (read once per process: it is megabytes)."""
    return get_plotlyjs().encode("utf-8")


def write_plotly_js(folder: str | Path) -> Path:
    """Put the installed plotly package's plotly.js in ``folder`` as :data:`PLOTLY_JS`, unless
    the same bytes are already there; returns its path.

    Safe to call from several threads or processes at once: each write goes to its own temporary
    file renamed over the target, so a reader sees the old file or the new one, never a part.
    """
    path = Path(folder) / PLOTLY_JS
    js = _plotly_js_bytes()
    try:
        same = path.stat().st_size == len(js) and path.read_bytes() == js
    except OSError:
        same = False
    if not same:
        logger.info("writing %s (%d bytes)", path, len(js))
        atomic_write_bytes(path, js)
    return path


def _static_copy(nb: Any) -> Any:
    """A copy without ipywidgets state or views: their offline renderer needs a CDN script,
    so each widget becomes a short note instead."""
    nb = copy.deepcopy(nb)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if _WIDGET_VIEW in data:
                out["data"] = {"text/html": _WIDGET_NOTE, "text/plain": "(interactive widget)"}
    return nb


def _shown_models(nb: Any, state: dict[str, Any]) -> set[str]:
    """The widget models an output shows, with every model linked to one of them (a child, a
    layout, a ``jslink`` between two of them): the ones a saved notebook needs to redraw."""
    shown = {out["data"][_WIDGET_VIEW].get("model_id") for cell in nb.cells
             for out in cell.get("outputs", []) if _WIDGET_VIEW in out.get("data", {})}
    refs = {mid: {other for other in state if f"IPY_MODEL_{other}" in text}
            for mid, text in ((mid, json.dumps(m.get("state", {}))) for mid, m in state.items())}
    keep, todo = set(), [m for m in shown if m in state]
    while todo:
        mid = todo.pop()
        if mid in keep:
            continue
        keep.add(mid)
        todo.extend(refs[mid] | {m for m, r in refs.items() if mid in r})
    return keep


def prune_widget_state(ipynb: str | Path) -> list[str]:
    """Drop from an executed notebook the saved state of widgets that no output shows; returns
    the model names dropped (the file is rewritten only when there are some).

    The kernel's client keeps the state of every widget a run created, closed ones included: a
    plotly ``FigureWidget`` that drew live training curves (and was then replaced by a static
    figure) leaves its whole JavaScript bundle, megabytes, in the notebook's metadata.
    """
    import nbformat  # deferred: seconds to import (see the module docstring)

    nb = nbformat.read(str(ipynb), as_version=4)
    state = nb.metadata.get("widgets", {}).get(_WIDGET_STATE, {}).get("state")
    if not state:
        return []
    keep = _shown_models(nb, state)
    dropped = [state[m].get("model_name", "?") for m in state if m not in keep]
    if dropped:
        for mid in [m for m in state if m not in keep]:
            del state[mid]
        if not state:
            del nb.metadata["widgets"]
        atomic_write_text(ipynb, nbformat.writes(nb))
        logger.info("%s: dropped the state of %d widget(s) no output shows: %s", ipynb,
                    len(dropped), dropped)
    return dropped


def export_html(ipynb: str | Path, html_path: str | Path, *, error: str = "",
                self_contained: bool = False) -> Path:
    """Export an executed notebook to HTML that opens offline with working plotly figures.

    The page loads plotly.js once, in its head: by default from :data:`PLOTLY_JS` beside it
    (written there by :func:`write_plotly_js` if missing or different), so a folder of reports
    holds one copy; with ``self_contained`` it is inlined, and the page needs nothing beside it.
    require.js, MathJax, mermaid and the ipywidgets manager (all CDN-loaded by nbconvert's
    ``lab`` template) are left out. ``error`` adds a red banner at the top.
    """
    import nbformat  # deferred: seconds to import (see the module docstring)
    from nbconvert import HTMLExporter

    nb = _static_copy(nbformat.read(str(ipynb), as_version=4))
    exporter = HTMLExporter(template_name="lab",
                            extra_loaders=[DictLoader({"gatrank_report.html.j2": _TEMPLATE})],
                            template_file="gatrank_report.html.j2")
    if self_contained:
        plotly = {"gatrank_plotly_js": _plotly_js_bytes().decode("utf-8")}
    else:
        write_plotly_js(Path(html_path).parent)
        plotly = {"gatrank_plotly_src": PLOTLY_JS}
    body, _ = exporter.from_notebook_node(nb, resources={**plotly, "gatrank_error": error})
    atomic_write_text(html_path, body)
    return Path(html_path)
