"""The main job: run the five notebooks headlessly and write a report folder.

:func:`run_suite` executes ``notebooks/01_data_checks`` ... ``05_eval`` in order with papermill,
each with its ``params/<notebook>.yaml``, in a kernel started from *this* Python interpreter (so
a fresh virtual environment works with no kernel registered by hand). Per run it writes::

    <out>/<notebook>.ipynb          the executed notebook (errors included)
    <out>/<notebook>.html           offline HTML: plotly.js embedded once, no CDN, no require.js
    <out>/<notebook>.results.json   what the notebook recorded (checks, metrics)
    <out>/<notebook>/               its training output (checkpoints, metrics.jsonl)
    <out>/summary.json              status, duration and results of every notebook
    <out>/index.html                the runbook's checks as a pass/fail table, links to reports

A notebook that fails still gets its executed notebook and HTML (papermill puts the error at
the top, the HTML adds a banner), the index marks it, and the suite goes on with the next one.
"""

from __future__ import annotations

import copy
import html
import logging
import os
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from gatrank import __version__
from gatrank.io import atomic_write_text, write_json

__all__ = [
    "NOTEBOOKS",
    "NotebookResult",
    "SuiteResult",
    "run_suite",
    "kernel_manager_class",
    "notebook_parameters",
    "export_html",
    "render_index",
    "default_out_dir",
]

logger = logging.getLogger(__name__)

NOTEBOOKS: tuple[str, ...] = (
    "01_data_checks",
    "02_loss_tests",
    "03_overfit",
    "04_full_train",
    "05_eval",
)
"""The notebooks in the order the suite runs them (each one step of the runbook)."""


@dataclass
class NotebookResult:
    name: str
    status: str
    """``PASS``, ``PASS (with warnings)``, ``FAIL``, ``FAIL (red flags)``, ``ERROR`` (the
    notebook raised) or ``NO RESULTS`` (it ran but recorded nothing)."""
    duration_s: float
    ipynb: str
    """Path of the executed notebook, relative to the report folder."""
    html: str
    parameters: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    results: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.status.startswith("PASS")


@dataclass
class SuiteResult:
    out_dir: Path
    notebooks: list[NotebookResult]
    duration_s: float
    summary: dict[str, Any]

    @property
    def ok(self) -> bool:
        """Every notebook ran and passed its checks."""
        return all(nb.ok for nb in self.notebooks)

    @property
    def exit_code(self) -> int:
        """0 when everything passed, 1 when a notebook failed or a check did not pass."""
        return 0 if self.ok else 1


def default_out_dir() -> Path:
    """``<project>/reports/<UTC timestamp>`` (``./reports/...`` outside a project checkout)."""
    from gatrank.notebook import project_root

    root = project_root() or Path.cwd()
    return root / "reports" / datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")


# --------------------------------------------------------------------------- kernel


def kernel_manager_class() -> type:
    """A jupyter KernelManager that always starts ``sys.executable -m ipykernel_launcher``.

    A kernelspec named ``python3`` may point at another interpreter (a user-level
    registration); the suite must run in the environment that runs it.
    """
    import importlib.util

    from jupyter_client.kernelspec import KernelSpec
    from jupyter_client.manager import KernelManager

    if importlib.util.find_spec("ipykernel") is None:
        raise RuntimeError(
            f"ipykernel is not installed for {sys.executable}; the suite runs notebooks in a "
            "kernel of this environment: pip install ipykernel"
        )

    from jupyter_core.paths import jupyter_runtime_dir
    from traitlets import default

    # unix sockets in Jupyter's runtime folder: nothing listens on a TCP port of this machine,
    # and the kernel has no "running over TCP without encryption" warning to print; TCP where
    # there are no unix sockets or their path would pass the ~100-byte limit
    sockets = os.path.join(jupyter_runtime_dir(), f"kernel-{'0' * 36}-ipc-99999")
    transport = "ipc" if os.name == "posix" and len(sockets) < 100 else "tcp"

    class CurrentPythonKernelManager(KernelManager):
        @default("transport")
        def _transport_default(self) -> str:
            return transport

        @default("ip")
        def _ip_default(self) -> str:
            if self.transport != "ipc":
                return super()._ip_default()
            # jupyter_client reads ip before it names the connection file and would fall back
            # to "kernel-ipc" in the working folder, shared by every kernel started there
            runtime = jupyter_runtime_dir()
            os.makedirs(runtime, exist_ok=True)
            return os.path.join(runtime, f"kernel-{uuid.uuid4()}-ipc")

        @property
        def kernel_spec(self) -> KernelSpec:
            if self._kernel_spec is None:
                self._kernel_spec = KernelSpec(
                    argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                    display_name=f"Python ({sys.executable})",
                    language="python",
                )
            return self._kernel_spec

    return CurrentPythonKernelManager


@contextmanager
def _environ(values: Mapping[str, str]):
    """Set environment variables for the kernels started inside (they inherit os.environ)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# --------------------------------------------------------------------------- parameters


def notebook_parameters(
    notebook: str | Path,
    params_file: str | Path | None,
    overrides: Mapping[str, Any],
) -> dict[str, Any]:
    """The parameters to inject: the YAML file's, then ``overrides``; only names the notebook
    declares in its ``parameters`` cell.

    Raises:
        ValueError: the YAML file is not a mapping or names a parameter the notebook lacks.
    """
    import papermill

    declared = set(papermill.inspect_notebook(str(notebook)))
    params: dict[str, Any] = {}
    if params_file is not None and Path(params_file).is_file():
        raw = yaml.safe_load(Path(params_file).read_text()) or {}
        if not isinstance(raw, dict):
            raise ValueError(f"{params_file}: expected a mapping of parameter: value")
        unknown = sorted(set(raw) - declared)
        if unknown:
            raise ValueError(
                f"{params_file}: unknown parameter(s) {unknown} for {Path(notebook).name}; "
                f"it declares {sorted(declared)}"
            )
        params.update(raw)
    params.update({k: v for k, v in overrides.items() if k in declared and v is not None})
    return params


# --------------------------------------------------------------------------- HTML export

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
    import nbformat
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter
    from plotly.offline import get_plotlyjs

    nb = _static_copy(nbformat.read(str(ipynb), as_version=4))
    exporter = HTMLExporter(template_name="lab",
                            extra_loaders=[DictLoader({"gatrank_report.html.j2": _TEMPLATE})],
                            template_file="gatrank_report.html.j2")
    body, _ = exporter.from_notebook_node(
        nb, resources={"gatrank_plotly_js": get_plotlyjs(), "gatrank_error": error}
    )
    atomic_write_text(html_path, body)
    return Path(html_path)


# --------------------------------------------------------------------------- running


def _read_results(path: Path) -> dict[str, Any] | None:
    import json

    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        logger.warning("could not read %s: %s", path, exc)
        return None


def _execute(src: Path, dst: Path, params: dict[str, Any], cwd: Path,
             timeout: int | None) -> str:
    """Run one notebook; returns '' or the error text. The output notebook is written either
    way (papermill saves it with the traceback and an error cell at the top)."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    try:
        papermill.execute_notebook(
            str(src), str(dst), parameters=params, cwd=str(cwd), progress_bar=False,
            log_output=False, kernel_manager_class=kernel_manager_class(),
            execution_timeout=timeout,
        )
    except PapermillExecutionError as exc:
        return f"{exc.ename}: {exc.evalue} (cell {exc.exec_count})"
    except Exception as exc:  # noqa: BLE001 - a kernel that dies must not stop the suite
        if not dst.is_file():
            import nbformat

            nb = nbformat.read(str(src), as_version=4)
            nbformat.write(nb, str(dst))
        return f"{type(exc).__name__}: {exc}"
    return ""


def run_suite(
    manifest: str | Path | None = None,
    out_dir: str | Path | None = None,
    *,
    notebooks: Sequence[str] | None = None,
    notebooks_dir: str | Path | None = None,
    params_dir: str | Path | None = None,
    parameters: Mapping[str, Any] | None = None,
    timeout: int | None = None,
    threads: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> SuiteResult:
    """Execute the notebooks in order and write the report folder (see the module docstring).

    Args:
        manifest: passed to every notebook (``None``: the embedded default).
        out_dir: the report folder; default :func:`default_out_dir` (and ``reports/latest``
            then points at it).
        notebooks: names (stems) to run, in :data:`NOTEBOOKS` order; default all five.
        notebooks_dir, params_dir: default ``notebooks/`` and ``params/`` of the project.
        parameters: overrides for every notebook that declares them (e.g. ``config``,
            ``model``, ``loss``, ``seed``); applied after the params files.
        timeout: seconds a single cell may run (default: no limit).
        threads: CPU threads per kernel (``OMP_NUM_THREADS``); on a shared or small machine 1 is
            often fastest. Default: torch's choice.
        progress: called with one line per notebook when it finishes.
    """
    from gatrank.notebook import STEPS, project_root

    t0 = time.perf_counter()
    root = project_root()
    nb_dir = Path(notebooks_dir) if notebooks_dir else (root / "notebooks" if root else None)
    if nb_dir is None or not nb_dir.is_dir():
        raise FileNotFoundError(
            f"notebook folder {nb_dir or 'notebooks/'} not found; run from the gatrank project "
            "(the folder with notebooks/ and params/) or pass notebooks_dir"
        )
    p_dir = Path(params_dir) if params_dir else nb_dir.parent / "params"
    names = list(notebooks) if notebooks else list(NOTEBOOKS)
    unknown = [n for n in names if not (nb_dir / f"{n}.ipynb").is_file()]
    if unknown:
        raise ValueError(f"no notebook(s) {unknown} in {nb_dir}; available: "
                         f"{sorted(p.stem for p in nb_dir.glob('*.ipynb'))}")
    default_out = out_dir is None
    out = Path(out_dir) if out_dir else default_out_dir()
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    overrides: dict[str, Any] = dict(parameters or {})
    if manifest:
        overrides["manifest"] = str(Path(manifest).expanduser().resolve())
    for key in ("config",):
        if overrides.get(key):
            overrides[key] = str(Path(overrides[key]).expanduser().resolve())
    overrides["run_dir"] = str(out)
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)} if threads else {}
    report = (lambda line: None) if progress is None else progress
    results: list[NotebookResult] = []
    with _environ(env):
        for i, name in enumerate(names, 1):
            src = nb_dir / f"{name}.ipynb"
            params = notebook_parameters(src, p_dir / f"{name}.yaml", overrides)
            (out / f"{name}.results.json").unlink(missing_ok=True)
            logger.info("[%d/%d] %s: running with %s", i, len(names), name, params)
            t = time.perf_counter()
            error = _execute(src, out / f"{name}.ipynb", params, nb_dir, timeout)
            duration = round(time.perf_counter() - t, 1)
            rec = _read_results(out / f"{name}.results.json")
            status = "ERROR" if error else rec["label"] if rec else "NO RESULTS"
            export_html(out / f"{name}.ipynb", out / f"{name}.html", error=error)
            res = NotebookResult(name=name, status=status, duration_s=duration,
                                 ipynb=f"{name}.ipynb", html=f"{name}.html", parameters=params,
                                 error=error, results=rec)
            results.append(res)
            report(f"[{i}/{len(names)}] {name:<15} {status:<20} {duration:6.1f} s"
                   + (f"  {error.splitlines()[0][:120]}" if error else ""))
    duration = round(time.perf_counter() - t0, 1)
    summary = {
        "gatrank": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "out_dir": str(out),
        "manifest": overrides.get("manifest", "") or "(embedded default: chembl-activity)",
        "status": "PASS" if all(r.ok for r in results) else "FAIL",
        "duration_s": duration,
        "threads": threads,
        "python": sys.executable,
        "notebooks": [{**asdict(r), "step": STEPS.get(r.name, r.name)} for r in results],
    }
    write_json(out / "summary.json", summary)
    atomic_write_text(out / "index.html", render_index(summary))
    if default_out:
        _link_latest(out)
    return SuiteResult(out_dir=out, notebooks=results, duration_s=duration, summary=summary)


def _link_latest(out: Path) -> None:
    """Point ``reports/latest`` at the newest default report folder (best effort)."""
    latest = out.parent / "latest"
    try:
        if latest.is_symlink() or latest.exists():
            if not latest.is_symlink():
                return  # a real folder someone made: leave it alone
            latest.unlink()
        latest.symlink_to(out.name, target_is_directory=True)
    except OSError as exc:
        logger.info("could not update %s: %s", latest, exc)


# --------------------------------------------------------------------------- index.html

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
  max-width: 1100px; color: #1f2328; padding: 0 1em; }
h1 { margin-bottom: 0.2em; } .meta { color: #57606a; margin-top: 0; }
table { border-collapse: collapse; width: 100%; margin: 0.5em 0 1.5em; }
th, td { border-bottom: 1px solid #d0d7de; padding: 0.35em 0.6em; text-align: left;
  vertical-align: top; }
th { background: #f6f8fa; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.badge { display: inline-block; padding: 0.1em 0.6em; border-radius: 1em; font-weight: 600;
  font-size: 0.9em; white-space: nowrap; }
.PASS { background: #dafbe1; color: #116329; } .FAIL, .ERROR, .FLAG { background: #ffebe9;
  color: #a40e26; } .WARN { background: #fff8c5; color: #7d4e00; }
.ok { color: #116329; } .muted { color: #57606a; }
tr.section td { background: #f6f8fa; font-weight: 600; padding-top: 0.8em; }
.error { color: #a40e26; font-family: ui-monospace, monospace; font-size: 0.9em; }
"""


def _badge(status: str) -> str:
    key = status.split()[0] if status else "FAIL"
    key = "WARN" if "warnings" in status else key
    key = key if key in ("PASS", "FAIL", "ERROR", "FLAG", "WARN") else "FAIL"
    return f'<span class="badge {key}">{html.escape(status)}</span>'


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def _check_result(c: Mapping[str, Any]) -> str:
    if c["kind"] == "pass":
        return _badge("PASS") if c["ok"] else _badge("FAIL")
    if c["kind"] == "red_flag":
        return '<span class="muted">not raised</span>' if c["ok"] else (
            '<span class="badge FLAG">RED FLAG</span>')
    return '<span class="ok">ok</span>' if c["ok"] else '<span class="badge WARN">WARNING</span>'


def render_index(summary: Mapping[str, Any]) -> str:
    """``index.html`` for a suite summary: status per notebook with links, then every check
    of every notebook (the runbook's pass criteria, red flags and warnings) with its measured
    value. Self-contained: inline CSS, no scripts, no external links."""
    e = html.escape
    nbs = summary["notebooks"]
    rows = []
    for i, nb in enumerate(nbs, 1):
        err = f'<div class="error">{e(nb["error"])}</div>' if nb.get("error") else ""
        rows.append(
            f"<tr><td>{i}</td><td><a href=\"{e(nb['html'])}\">{e(nb['name'])}</a></td>"
            f"<td>{e(nb['step'])}</td><td>{_badge(nb['status'])}{err}</td>"
            f"<td class=\"num\">{nb['duration_s']:.1f} s</td>"
            f"<td><a href=\"{e(nb['html'])}\">HTML</a> &middot; "
            f"<a href=\"{e(nb['ipynb'])}\">notebook</a></td></tr>"
        )
    checks = []
    for nb in nbs:
        res = nb.get("results") or {}
        checks.append(f'<tr class="section"><td colspan="4"><a href="{e(nb["html"])}">'
                      f"{e(nb['step'])}</a> ({e(nb['name'])}) {_badge(nb['status'])}</td></tr>")
        if not res.get("checks"):
            why = "the notebook failed before recording its checks" if nb.get("error") \
                else "no checks recorded"
            checks.append(f'<tr><td colspan="4" class="muted">{why}</td></tr>')
        for c in res.get("checks", []):
            detail = f'<div class="muted">{e(c["detail"])}</div>' if c.get("detail") else ""
            checks.append(f"<tr><td>{e(c['rule'])}{detail}</td><td>{e(c['kind'])}</td>"
                          f"<td class=\"num\">{_fmt(c.get('value'))}</td>"
                          f"<td>{_check_result(c)}</td></tr>")
    causes = [c for nb in nbs for c in ((nb.get("results") or {}).get("causes") or [])]
    causes_html = ""
    if causes:
        items = "".join(f"<li><strong>{e(str(c.get('id', '')))}</strong>: "
                        f"{e(str(c.get('evidence', '')))} <em>Fix:</em> {e(str(c.get('fix', '')))}"
                        "</li>" for c in causes)
        causes_html = f"<h2>Likely causes</h2><ol>{items}</ol>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>gatrank suite: {e(summary['status'])}</title><style>{_CSS}</style></head>
<body>
<h1>gatrank suite {_badge(summary['status'])}</h1>
<p class="meta">{e(summary['created'])} &middot; manifest {e(str(summary['manifest']))}
&middot; {summary['duration_s']:.1f} s &middot; gatrank {e(summary['gatrank'])}</p>
<h2>Notebooks</h2>
<table><thead><tr><th>#</th><th>notebook</th><th>runbook step</th><th>status</th>
<th>duration</th><th>report</th></tr></thead><tbody>{''.join(rows)}</tbody></table>
{causes_html}
<h2>The runbook's checks</h2>
<p class="muted">Pass criteria must hold for a step to pass; red flags are the runbook's signs of
a still-broken model; warnings point at weaknesses without failing the step.</p>
<table><thead><tr><th>check</th><th>kind</th><th>measured</th><th>result</th></tr></thead>
<tbody>{''.join(checks)}</tbody></table>
<p class="muted">Details, plots and tracebacks: follow each notebook's HTML link.
<a href="summary.json">summary.json</a> holds the same data.</p>
</body></html>
"""
