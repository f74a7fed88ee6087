"""Showing things in a notebook: an offline plotly renderer, :func:`show`, checks and results
tables, the doctor's causes, per-group metrics and a sortable HTML table.

Every ``show_*`` is a no-op outside IPython, so the same calls run under papermill, nbval and
plain Python.
"""

from __future__ import annotations

import html
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from IPython import get_ipython
from IPython.display import HTML, Markdown, display
from plotly.io._base_renderers import MimetypeRenderer, PlotlyRenderer
from plotly.io.json import to_json_plotly

from gatrank import render
from gatrank.checks.verdict import Check
from gatrank.config import Config
from gatrank.notebook.results import check_dicts, fix_rows
from gatrank.plots import metrics_bars

__all__ = [
    "RENDERER",
    "setup",
    "show",
    "checks_table",
    "show_checks",
    "show_results",
    "show_causes",
    "config_table",
    "show_grouped",
    "sortable_table",
]

RENDERER = "gatrank"
"""Name of the plotly renderer :func:`setup` makes the default."""


# --------------------------------------------------------------------------- rendering


def _figure_html(fig_dict: dict[str, Any]) -> str:
    """A div and a script that draw the figure with an already loaded ``window.Plotly``.

    No plotly.js and no CDN link: ``gatrank suite`` puts plotly.js once into each exported HTML
    page. Where plotly.js is absent the div says so instead of failing silently.
    """
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


class _OfflineRenderer(MimetypeRenderer):
    """plotly JSON for JupyterLab plus self-contained HTML for exports; no CDN."""

    def to_mimebundle(self, fig_dict):
        bundle = PlotlyRenderer(config={"responsive": True}).to_mimebundle(fig_dict)
        title = ((fig_dict.get("layout") or {}).get("title") or {}).get("text", "")
        bundle["text/html"] = _figure_html(fig_dict)
        bundle["text/plain"] = f"<plotly figure: {title}>" if title else "<plotly figure>"
        return bundle


_RENDERER = _OfflineRenderer()


def setup() -> None:
    """Make :data:`RENDERER` plotly's default renderer (idempotent).

    Figures then carry ``application/vnd.plotly.v1+json`` (JupyterLab draws it natively) and a
    ``text/html`` fallback that uses an embedded plotly.js, never a CDN.
    """
    pio.renderers[RENDERER] = _RENDERER
    pio.renderers.default = RENDERER


def in_ipython() -> bool:
    """Whether this runs in an IPython kernel or shell (where displaying means something)."""
    return get_ipython() is not None


def _bundle(obj: Any) -> dict[str, Any] | None:
    """A plotly figure's mime bundle from :data:`RENDERER` (None for anything else).

    plotly figures display themselves through ``_ipython_display_``, which drops the
    ``display_id`` that in-place updates need; a raw bundle keeps it.
    """
    if isinstance(obj, go.Figure):
        return _RENDERER.to_mimebundle(obj.to_dict())
    return None


def show(obj: Any, handle: Any = None) -> Any:
    """Display ``obj`` in a notebook, or replace what ``handle`` shows; returns the handle.

    A no-op outside IPython. Plotly figures go out as :data:`RENDERER` bundles.
    """
    if not in_ipython():
        return None
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


# --------------------------------------------------------------------------- tables


def checks_table(checks: Sequence[Mapping[str, Any] | Check]) -> pd.DataFrame:
    """Checks (dicts or a verdict's :class:`~gatrank.checks.verdict.Check` objects) as a
    DataFrame with a ``result`` column: ok/FAIL, -- /FLAG, ok/WARN."""
    rows = [{"check": c["rule"], "kind": c["kind"], "measured": c["value"],
             "result": render.check_mark(c), "detail": c.get("detail", "")}
            for c in check_dicts(checks)]
    return pd.DataFrame(rows, columns=["check", "kind", "measured", "result", "detail"])


def _checks_html(checks: Sequence[Mapping[str, Any] | Check]) -> str:
    return render.checks_html(check_dicts(checks))


def show_checks(checks: Sequence[Mapping[str, Any] | Check]) -> None:
    """Display checks as a table, failures in red and warnings in amber."""
    if not in_ipython():
        return
    display(HTML(_checks_html(checks)))


def show_results(results: Mapping[str, Any]) -> None:
    """Display a results dict: its step and label as a heading, then its checks."""
    if not in_ipython():
        return
    display(HTML(render.results_html({**results, "checks": check_dicts(results["checks"])})))


def show_causes(report: Any, *, command: str = "gatrank doctor") -> None:
    """Display a :class:`gatrank.doctor.DoctorReport`: its verdict, then each cause (most likely
    first) with its likelihood, whether its fix was verified (where it was tried), evidence and
    the runbook's fix; when there is none, one line."""
    if not in_ipython():
        return
    display(HTML(render.causes_html(
        {"verdict": report.verdict, "causes": [c.to_dict() for c in report.causes]},
        command=command)))


def show_fixes(report: Any, *, passed: bool) -> None:
    """The verified fixes of a :class:`gatrank.doctor.DoctorReport` (from
    :func:`gatrank.notebook.verify_fixes`): per top cause the change applied, whether the
    overfit test then passes and at which epoch, with the measured values; then the verified
    config as YAML to copy into yours (no button: select the block). One line when there is
    nothing to verify."""
    if not in_ipython():
        return
    if report is None:
        display(HTML("<p>" + ("The overfit test passed: there is no fix to verify."
                              if passed else "Fix verification is off (verify_fixes: false)."
                              ) + "</p>"))
        return
    rows = fix_rows(report)
    if not rows:
        display(HTML(f"<p>The doctor ({html.escape(report.verdict)}) found no cause whose fix "
                     "could be tried.</p>"))
        return
    display(HTML(render.fixes_html(rows)))
    from gatrank.doctor.handover import fix_config, verified_cause

    cause = verified_cause(report)
    if cause is not None and cause.verification["fix"].get("config"):
        import yaml

        text = yaml.safe_dump(fix_config(report, cause, only_changes=True), sort_keys=False)
        display(HTML(f"<p>The keys the verified fix of <code>{html.escape(cause.id)}</code> "
                     "changes, to copy into your YAML config (<code>gatrank doctor --write-fix "
                     "DIR</code> writes your whole config with them as a file):</p>"
                     f"<pre>{html.escape(text)}</pre>"))


def config_table(config: Config) -> pd.DataFrame:
    """A config as rows (section, key) -> value."""
    rows = [(section, key, value) for section, values in config.to_dict().items()
            for key, value in values.items()]
    return pd.DataFrame(rows, columns=["section", "key", "value"]).set_index(["section", "key"])


def show_grouped(grouped: Mapping[str, Any] | None) -> None:
    """Per-group metrics (a table and Spearman per group), or a note when there are no groups."""
    if not in_ipython():
        return
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
    if df.empty:
        return HTML("<p><em>(no rows)</em></p>")
    tid = f"gatrank-table-{uuid.uuid4().hex[:12]}"
    table = df.to_html(index=False, table_id=tid, border=0, na_rep="",
                       float_format=lambda v: float_format.format(v))
    return HTML(f"<div style='max-height:{max_height}px;overflow:auto'>{table}</div>"
                f"<script type='text/javascript'>{_SORT_JS % tid}</script>")
