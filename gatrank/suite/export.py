"""Executed notebooks as HTML that opens offline: plotly.js from the installed plotly package and
JupyterLab's stylesheet (one ``plotly.min.js`` and one ``notebook.css`` shared by a folder's
reports, or inlined in each), no CDN, no require.js, widgets replaced by a note, and a red banner
on top of a notebook that failed.

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
from markupsafe import Markup

from gatrank.io import atomic_write_text, write_if_changed
from gatrank.offline import PLOTLY_JS, plotly_js_bytes, write_plotly_js

__all__ = ["PLOTLY_JS", "NOTEBOOK_CSS", "export_html", "write_plotly_js", "prune_widget_state"]

logger = logging.getLogger(__name__)

NOTEBOOK_CSS = "notebook.css"
"""File name of the stylesheet (JupyterLab's, about 260 kB) those reports load from their folder."""

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
{%- block notebook_css -%}
{%- if resources.gatrank_css_href %}
<link rel="stylesheet" type="text/css" href="{{ resources.gatrank_css_href }}">
{%- endif %}
{{ super() }}
{%- endblock notebook_css -%}
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
def _exporter_class() -> type:
    """nbconvert's HTML exporter that, given a list as the ``gatrank_shared_css`` resource,
    collects the stylesheets the template would inline into it and leaves them out of the page."""
    from nbconvert import HTMLExporter  # deferred: seconds to import (see the module docstring)

    class ReportExporter(HTMLExporter):
        def _init_resources(self, resources):
            resources = super()._init_resources(resources)
            shared = resources.get("gatrank_shared_css")
            if shared is not None:
                env = self.environment

                def include_css(name: str) -> Markup:
                    shared.append(env.loader.get_source(env, name)[0])
                    return Markup("")

                resources["include_css"] = include_css
            return resources

    return ReportExporter


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
        logger.debug("%s: dropped the state of %d widget(s) no output shows: %s", ipynb,
                    len(dropped), dropped)
    return dropped


def export_html(ipynb: str | Path, html_path: str | Path, *, error: str = "",
                self_contained: bool = False) -> Path:
    """Export an executed notebook to HTML that opens offline with working plotly figures.

    The page loads plotly.js once, in its head, and JupyterLab's stylesheet: by default from
    :data:`PLOTLY_JS` and :data:`NOTEBOOK_CSS` beside it (written there if missing or different,
    safe from concurrent exports), so a folder of reports holds one copy of each; with
    ``self_contained`` both are inlined, and the page needs nothing beside it. require.js,
    MathJax, mermaid and the ipywidgets manager (all CDN-loaded by nbconvert's ``lab`` template)
    are left out. ``error`` adds a red banner at the top.
    """
    import nbformat  # deferred: seconds to import (see the module docstring)

    nb = _static_copy(nbformat.read(str(ipynb), as_version=4))
    exporter = _exporter_class()(
        template_name="lab", extra_loaders=[DictLoader({"gatrank_report.html.j2": _TEMPLATE})],
        template_file="gatrank_report.html.j2")
    folder = Path(html_path).parent
    css: list[str] = []
    if self_contained:
        assets = {"gatrank_plotly_js": plotly_js_bytes().decode("utf-8")}
    else:
        write_plotly_js(folder)
        assets = {"gatrank_plotly_src": PLOTLY_JS, "gatrank_css_href": NOTEBOOK_CSS,
                  "gatrank_shared_css": css}
    body, _ = exporter.from_notebook_node(nb, resources={**assets, "gatrank_error": error})
    if not self_contained:
        write_if_changed(folder / NOTEBOOK_CSS, "\n".join(css).encode("utf-8"))
    atomic_write_text(html_path, body)
    return Path(html_path)
