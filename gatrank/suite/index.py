"""``index.html`` of a suite run: each notebook's status with links to its reports, then every
check of every notebook with its measured value. Self-contained: inline CSS, no scripts."""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

from gatrank.checks.margins import margin_sentence

__all__ = ["render_index"]


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


def _source(summary: Mapping[str, Any]) -> str:
    """The run's data for the header line: ``dataset SPEC`` or ``manifest PATH``."""
    if summary.get("dataset"):
        return f"dataset {html.escape(str(summary['dataset']))}"
    return f"manifest {html.escape(str(summary['manifest']))}"


def _check_result(c: Mapping[str, Any]) -> str:
    if c["kind"] == "pass":
        return _badge("PASS") if c["ok"] else _badge("FAIL")
    if c["kind"] == "red_flag":
        return '<span class="muted">not raised</span>' if c["ok"] else (
            '<span class="badge FLAG">RED FLAG</span>')
    return '<span class="ok">ok</span>' if c["ok"] else '<span class="badge WARN">WARNING</span>'


def _margins_html(nbs: Any) -> str:
    """One line per fitted baseline a notebook compared the model with (05_eval's paired
    bootstrap on its split): beats it, loses to it, or no difference beyond the noise."""
    items = []
    for nb in nbs:
        res = nb.get("results") or {}
        for name, m in (res.get("margins") or {}).items():
            mark = "PASS" if m.get("better") else "FAIL" if m.get("worse") else "WARN"
            word = {"PASS": "beats", "FAIL": "loses", "WARN": "no clear lead"}[mark]
            items.append(f"<li>{_badge_text(mark, word)} {html.escape(nb['name'])} "
                         f"({html.escape(str(res.get('split', '')))} split): "
                         f"the model {html.escape(margin_sentence(name, m))}</li>")
    return f"<h2>The model against the baselines</h2><ul>{''.join(items)}</ul>" if items else ""


def _fixes_html(nbs: Any) -> str:
    """One line per cause whose fix a notebook verified or judged (03_overfit, when its test
    failed): the change, and whether the overfit test then passed, at which epoch."""
    items = []
    for nb in nbs:
        for r in (nb.get("results") or {}).get("fixes") or []:
            mark = {"verified": "PASS", "not_enough": "FAIL"}.get(r.get("status"), "WARN")
            at = f" at epoch {r['epoch']}" if r.get("epoch") else ""
            measured = (f" (pairwise accuracy {_fmt(r.get('pairwise_accuracy'))}, Spearman "
                        f"{_fmt(r.get('spearman'))}, score std {_fmt(r.get('score_std'))})"
                        if r.get("status") in ("verified", "not_enough") else "")
            items.append(f"<li>{_badge_text(mark, str(r.get('result', '')))} "
                         f"<strong>{html.escape(str(r.get('cause', '')))}</strong>: "
                         f"{html.escape(str(r.get('fix', '')))}"
                         + (f"; the overfit test passes{at}" if r.get("status") == "verified"
                            else "") + f"{measured}</li>")
    return f"<h2>Verified fixes</h2><ul>{''.join(items)}</ul>" if items else ""


def _badge_text(key: str, text: str) -> str:
    return f'<span class="badge {key}">{html.escape(text)}</span>'


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
    causes_html += _fixes_html(nbs) + _margins_html(nbs)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>gatrank suite: {e(summary['status'])}</title><style>{_CSS}</style></head>
<body>
<h1>gatrank suite {_badge(summary['status'])}</h1>
<p class="meta">{e(summary['created'])} &middot; {_source(summary)}
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
