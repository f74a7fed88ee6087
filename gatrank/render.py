"""The one HTML renderer: the notebooks' tables (so the suite's reports), and the
``_repr_html_`` of a Verdict, a CheckReport and a DoctorReport. Each function takes a result's
``to_dict()`` and returns an HTML fragment: tables with inline styles only (JupyterLab's
stylesheet does the rest), failures red, warnings amber, static SVG charts, no JavaScript;
everything taken from the arguments is escaped. Standard library only, on purpose: the verdict
imports it free of torch and pandas, and so does the suite's process, which never imports torch.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["RED", "AMBER", "GREEN", "Html", "Cell", "fmt", "table", "heading", "check_mark",
           "checks_html", "results_html", "verdict_html", "verification_mark", "causes_html",
           "fixes_html", "trace_html", "doctor_html", "check_report_html", "line_chart_svg",
           "overfit_html"]

RED, AMBER, GREEN, GREY, BLUE = "#cf222e", "#9a6700", "#1a7f37", "#57606a", "#0969da"
"""Failures, warnings, passes; and the quiet text and the bars."""
_BOLD = "font-weight:bold"
_HIGHLIGHT = "background:#ffebe9"
_DECADES = 4  # a trace's bars: the largest std is the full bar, each decade less a quarter
_PALETTE = (BLUE, RED, GREEN, "#8250df", AMBER, "#bf3989")


class Html(str):
    """A fragment that is already HTML: :func:`table` puts it in as it is, not escaped."""


@dataclass(frozen=True)
class Cell:
    """A table cell with a CSS style of its own (``value``: a value or :class:`Html`)."""

    value: Any
    style: str = ""


def fmt(value: Any, none: str = "-") -> str:
    """A value as text: floats to 4 significant digits, None as ``none``."""
    if value is None:
        return none
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _e(value: Any, none: str = "-") -> str:
    return value if isinstance(value, Html) else html.escape(fmt(value, none))


def _p(text: Any, style: str = "") -> str:
    return f"<p style='{style}'>{_e(text)}</p>" if style else f"<p>{_e(text)}</p>"


def _code(text: Any) -> Html:
    return Html(f"<code>{_e(text)}</code>")


def _section(title: str, note: str = "") -> str:
    return f"<p><b>{_e(title)}</b>" + (f" <span style='color:{GREY}'>{_e(note)}</span>"
                                       if note else "") + "</p>"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, align: str = "",
          row_styles: Sequence[str] | None = None) -> str:
    """A table: ``headers`` (text), then a ``<tr>`` per row of cells, each a value (escaped,
    see :func:`fmt`), an :class:`Html` fragment or a :class:`Cell` with a style. ``align``: a
    letter per column, ``l`` or ``r`` (missing: left); ``row_styles``: a CSS style per row."""
    head = "".join(f"<th style='text-align:left'>{_e(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        tr_style = row_styles[i] if row_styles else ""
        cells = []
        for k, value in enumerate(row):
            style = "text-align:" + ("right" if align[k:k + 1] == "r" else "left")
            if isinstance(value, Cell):
                style, value = f"{style};{value.style}" if value.style else style, value.value
            cells.append(f"<td style='{html.escape(style)}'>{_e(value)}</td>")
        tr = f"<tr style='{html.escape(tr_style)}'>" if tr_style else "<tr>"
        body.append(tr + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def heading(text: str, colour: str = "", note: str = "") -> str:
    """An ``<h3>`` in ``colour``, with a quiet ``note`` after it (e.g. the seconds taken)."""
    style = f" style='color:{html.escape(colour)}'" if colour else ""
    after = (f" <span style='color:{GREY};font-weight:normal;font-size:0.8em'>{_e(note)}</span>"
             if note else "")
    return f"<h3{style}>{_e(text)}{after}</h3>"


# --------------------------------------------------------------------------- checks, verdicts

_MARKS = {"pass": ("ok", "FAIL"), "red_flag": ("--", "FLAG"), "warning": ("ok", "WARN")}


def check_mark(check: Mapping[str, Any]) -> str:
    """A check's result: ``ok``/``FAIL`` (a pass criterion), ``--``/``FLAG`` (a red flag),
    ``ok``/``WARN`` (a warning)."""
    return _MARKS[check["kind"]][0 if check["ok"] else 1]


def checks_html(checks: Iterable[Mapping[str, Any] | Any]) -> str:
    """Checks ``{name, kind, rule, value, ok[, detail]}`` (or objects with ``to_dict()``) as a
    table: check (the rule with its threshold), kind, measured, result, and detail where a
    check has one; FAIL and FLAG in bold red, WARN in bold amber."""
    checks = [c if isinstance(c, Mapping) else c.to_dict() for c in checks]
    detail = any(c.get("detail") for c in checks)
    rows = []
    for c in checks:
        mark = check_mark(c)
        style = (f"color:{RED};{_BOLD}" if mark in ("FAIL", "FLAG") else
                 f"color:{AMBER};{_BOLD}" if mark == "WARN" else "")
        v = c.get("value")
        rows.append((c["rule"], c["kind"], "" if v is None or v != v else fmt(v), Cell(mark, style),
                     *([c.get("detail", "")] if detail else [])))
    return table(("check", "kind", "measured", "result", *(["detail"] if detail else [])),
                 rows, align="llrll")


def results_html(results: Mapping[str, Any]) -> str:
    """A notebook's results dict: its step and label as a heading (green when it passed, red
    when not), then its checks."""
    return (heading(f"{results['step']}: {results['label']}", GREEN if results["passed"] else RED)
            + checks_html(results["checks"]))


def verdict_html(verdict: Mapping[str, Any], *, still_learning: str = "") -> str:
    """A :class:`~gatrank.checks.verdict.Verdict` (its ``to_dict()``), saying what
    :func:`~gatrank.checks.verdict.format_verdict` says: the label, the checks (the rule names
    the runbook's threshold, measured is the value), the epoch the criteria were first met,
    ``still_learning`` (:attr:`Verdict.still_learning`, the trend in words) and the thresholds
    applied."""
    parts = [heading(f"verdict: {verdict['label']}", GREEN if verdict["passed"] else RED),
             checks_html(verdict["checks"])]
    if verdict.get("epochs_to_pass") is not None:
        ideal = verdict.get("epochs_to_ideal")
        parts.append(_p(f"criteria first met at epoch {verdict['epochs_to_pass']}"
                        + (f", ideal at epoch {ideal}" if ideal is not None else "")))
    t = verdict.get("trend")
    if t and not still_learning:  # a verdict's dict without its sentence: the trend in short
        still_learning = (f"still learning: pairwise accuracy {t['from']:.3f} -> {t['to']:.3f} "
                          f"over epochs {t['epochs'][0]}-{t['epochs'][1]} ({t['slope']:+.2g} per "
                          f"epoch): train longer before judging it")
    if still_learning:
        parts.append(_p(still_learning, f"color:{AMBER}"))
    if verdict.get("thresholds"):
        parts.append(_p(verdict["thresholds"], f"color:{GREY}"))
    return "".join(parts)


# --------------------------------------------------------------------------- the doctor

_VERIFICATION = {"not_enough": "fix tried, not enough alone", "human": "fix needs you",
                 "consequence": "follows from another cause", "not_applicable": "fix not tried"}


def verification_mark(verification: Mapping[str, Any] | None) -> Cell:
    """A cause's verification in a cell: ``Verified`` (bold green, with the epoch the overfit
    test then passes at, where it has one), or the other statuses as the terminal report words
    them; ``-`` when the fix was not tried."""
    if not verification:
        return Cell("-")
    status = verification.get("status", "")
    if status == "verified":
        epoch = verification.get("epoch")
        text = "Verified" + (f": the overfit test passes at epoch {epoch}"
                             if epoch is not None else "")
        return Cell(text, f"color:{GREEN};{_BOLD}")
    return Cell(_VERIFICATION.get(status, status),
                f"color:{AMBER}" if status in ("not_enough", "human") else f"color:{GREY}")


def causes_html(report: Mapping[str, Any], *, command: str | None = "gatrank doctor") -> str:
    """The doctor's reading (a report's ``to_dict()``, or ``{verdict, causes}``): the verdict,
    then the causes most likely first (#, cause id, likelihood, verification when a cause's fix
    was tried, evidence, fix); one line when there is none. ``command``: the doctor run to
    suggest for ablations that tell the causes apart (None: no suggestion)."""
    verdict, causes = report["verdict"], report.get("causes") or []
    if not causes:
        return (f"<p>The doctor's reading: <b>{_e(verdict)}</b>, no cause of collapse "
                "found.</p>")
    run = (f" (for static checks and ablations that tell them apart, run "
           f"<code>{_e(command)}</code>)" if command else "")
    intro = (f"<p style='color:{RED}'>The doctor's reading: <b>{_e(verdict)}</b>. Likely "
             f"causes, most likely first{run}:</p>")
    tried = any(c.get("verification") for c in causes)
    rows = []
    for k, c in enumerate(causes, 1):
        stage = (f"<br><span style='color:{GREY};font-size:0.85em'>from the "
                 f"{_e(c['stage'])} stage</span>" if c.get("stage") else "")
        rows.append((k, Html(_code(c["id"]) + stage), f"{c['score']:.2f}",
                     *([verification_mark(c.get("verification"))] if tried else []),
                     c["evidence"], c["fix"]))
    headers = ("#", "cause", "likelihood", *(["verification"] if tried else []), "evidence",
               "fix")
    return intro + table(headers, rows, align="rlr")


def fixes_html(rows: Iterable[Mapping[str, Any]]) -> str:
    """The verified fixes (:func:`gatrank.notebook.results.fix_rows`): per cause the result
    (verified in bold green), the change applied, the epoch the overfit test passes at and the
    values it measured."""
    body = [(r["cause"], Cell(r["result"], f"color:{GREEN};{_BOLD}"
                              if r.get("status") == "verified" else ""), r["fix"], r["epoch"],
             r["pairwise_accuracy"], r["spearman"], r["score_std"]) for r in rows]
    return table(("cause", "result", "change applied", "passes at epoch", "pairwise accuracy",
                  "Spearman", "score std"), body, align="lllrrrr")


def _std_cell(std: float | None, same: bool | None, scale: tuple[float, float]) -> Html:
    """The std across graphs beside a bar on a log scale (``scale``: its lowest and highest
    log10); no bar for 0 or nothing measured."""
    width = 0.0
    if std is not None and std > 0 and math.isfinite(std):
        lo, hi = scale
        width = 2 + 98 * (min(max(math.log10(std), lo), hi) - lo) / (hi - lo) if hi > lo else 100
    bar = (f"<span style='display:inline-block;width:100px;vertical-align:middle'>"
           f"<span style='display:inline-block;width:{width:.0f}px;height:0.75em;"
           f"background:{BLUE}'></span></span> ")
    text = "-" if std is None or not math.isfinite(std) else f"{std:.3g}"
    return Html(bar + _e(text + (" (same for all)" if same else "")))


def trace_html(trace: Mapping[str, Any], *, title: str = "") -> str:
    """A signal trace (:meth:`~gatrank.doctor.trace_types.SignalTrace.to_dict`) under ``title``:
    the culprit's evidence, then a row per module in forward order (path, type, level, std
    across graphs with a bar on a log scale, zeros), the culprit's row highlighted, the scores
    last."""
    c = trace.get("culprit")
    mods = trace.get("modules") or []
    logs = [math.log10(s) for s in [*(m.get("graph_std") for m in mods),
                                    trace.get("scores_std")]
            if s is not None and s > 0 and math.isfinite(s)]
    scale = (max(logs) - _DECADES, max(logs)) if logs else (0.0, 0.0)
    parts = [_section(title or "Signal trace", f"(std across {trace.get('num_graphs')} graphs "
                                               "per module, in forward order)")]
    if c:
        parts.append(f"<p style='color:{RED}'>culprit {_code(c['cause'])}: "
                     f"{_e(c['evidence'])}</p>")
    rows, styles = [], []
    for m in mods:
        hit = bool(c) and c["where"] == "module" and m["path"] == c["path"]
        zeros = m.get("zero_fraction")
        rows.append((_code(m["path"]), m["type"], m["level"],
                     _std_cell(m.get("graph_std"), m.get("constant"), scale),
                     "-" if zeros is None else f"{100 * zeros:.0f}%",
                     Cell(f"\u2190 culprit ({c['cause']})", f"color:{RED};{_BOLD}")
                     if hit else ""))
        styles.append(_HIGHLIGHT if hit else "")
    forward = bool(c) and c["where"] == "forward"
    note = ""
    if forward:
        note = f"\u2190 culprit: forward code after {c['path']}" + (
            f": {c['op']} at {c.get('site', '')}" if c.get("op") else "")
    rows.append((Html("<b>scores</b>"), str(trace.get("score_shape", "")), "",
                 _std_cell(trace.get("scores_std"), trace.get("scores_constant"), scale), "",
                 Cell(note, f"color:{RED};{_BOLD}")))
    styles.append(_HIGHLIGHT if forward else "")
    std = f"std across graphs (bar: log, {_DECADES} decades)"
    parts.append(table(("module", "type", "level", std, "zeros", ""), rows, align="llllr",
                       row_styles=styles))
    return "".join(parts)


def _traces(report: Mapping[str, Any]) -> list[str]:
    """The signal traces as the terminal report shows them: a table each, or for a healthy
    verdict one line on the trace at initialisation."""
    traces = report.get("trace") or {}
    if report["verdict"] == "healthy":
        init = traces.get("init")
        if init is None or init.get("scores_std") is None:
            return []
        return [_p(f"signal trace at initialisation: score std {init['scores_std']:.3g} across "
                   f"{init['num_graphs']} graphs, no layer makes them constant"
                   if init.get("culprit") is None else
                   f"signal trace at initialisation: {init['culprit']['evidence']}")]
    names = {"init": "at initialisation", "end": "after the overfit run"}
    return [trace_html(t, title=f"Signal trace {names.get(key, key)}")
            for key, t in traces.items()]


_STATUS_STYLE = {"failed": f"color:{RED};{_BOLD}", "warning": f"color:{AMBER}",
                 "not enough": f"color:{AMBER}", **dict.fromkeys(
                     ("verified", "passed", "fits", "fixes"), f"color:{GREEN}")}


def doctor_html(report: Mapping[str, Any]) -> str:
    """A :class:`~gatrank.doctor.DoctorReport` (its ``to_dict()``), saying what its
    ``format_text()`` says: the verdict, the causes (:func:`causes_html`) or why there is none,
    the stages, the user's settings beside the runbook's overfit test, the signal traces and
    the notes."""
    verdict = report["verdict"]
    colour = GREEN if verdict == "healthy" else AMBER if verdict == "still_learning" else RED
    parts = [heading(f"doctor: {verdict.upper()}", colour,
                     f"({report.get('seconds', 0.0):.1f} s)")]
    if report.get("causes"):
        parts.append(causes_html(report, command=None))
    elif verdict == "still_learning":
        parts.append(_p("no cause: the run was still learning when it ended (see the notes)"))
    elif verdict != "healthy" and report.get("notes"):
        parts.append(_p("no cause id matched: see the notes below"))
    else:
        parts.append(_p("no cause of collapse found"))
    if report.get("stages"):
        parts.append(_section("Stages") + table(
            ("stage", "status", "seconds", "summary"),
            [(s["name"], Cell(s["status"], _STATUS_STYLE.get(s["status"], "")),
              f"{s['seconds']:.1f}", ", ".join(f"{k}={fmt(v)}" for k, v in s["summary"].items()
                                               if not isinstance(v, (dict, list))))
             for s in report["stages"]],
            align="llr"))
    if report.get("config_diff"):
        parts.append(_section("Your settings beside the runbook's overfit test") + table(
            ("setting", "yours", "runbook"),
            [(_code(d["key"]), d["yours"], d["runbook"]) for d in report["config_diff"]]))
    parts += _traces(report)
    if report.get("notes"):
        parts.append(_section("Notes") + "<ul>" + "".join(f"<li>{_e(n)}</li>"
                                                          for n in report["notes"]) + "</ul>")
    return "".join(parts)


# --------------------------------------------------------------------------- data checks


def check_report_html(report: Mapping[str, Any]) -> str:
    """A :class:`~gatrank.data.CheckReport` (its ``to_dict()``), saying what its
    ``format_table()`` says: how many errors and warnings where, each problem (severity, the
    graph's index in a dataset or line in a manifest, id, file where it is not the manifest's,
    code, problem, fix; errors red, warnings amber) or "no problems found", then the summary."""
    s = report.get("summary") or {}
    where = f"dataset {s['dataset']}" if "dataset" in s else s.get("manifest")
    problems = report.get("problems") or []
    errors = sum(p.get("severity") != "warning" for p in problems)
    colour = RED if errors else AMBER if problems else GREEN
    parts = [heading(f"{errors} error(s), {len(problems) - errors} warning(s) in {where}",
                     colour)]
    if problems:
        by_index = (any(p.get("index") is not None for p in problems)
                    and all(p.get("line") is None for p in problems))
        source = s.get("dataset", s.get("manifest"))
        files = any(p.get("file") not in (None, source) for p in problems)
        rows = []
        for p in problems:
            warn = p.get("severity") == "warning"
            rows.append((Cell("warning" if warn else "error",
                              f"color:{AMBER};{_BOLD}" if warn else f"color:{RED};{_BOLD}"),
                         p.get("index") if by_index else p.get("line"), p.get("id"),
                         *([p.get("file")] if files else []), _code(p.get("code")),
                         p.get("problem"), p.get("fix")))
        headers = ("severity", "index" if by_index else "line", "id",
                   *(["file"] if files else []), "code", "problem", "fix")
        parts.append(table(headers, rows, align="lr"))
    else:
        parts.append(_p("no problems found", f"color:{GREEN}"))
    summary = [(key, ", ".join(f"{k}={fmt(v)}" for k, v in value.items())
                if isinstance(value, dict) else value) for key, value in s.items()]
    parts.append(_section("Summary") + table(("summary", "value"), summary))
    return "".join(parts)


# --------------------------------------------------------------------------- charts


def _finite(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values that cover ``lo``..``hi`` (``lo < hi``), about ``n`` of them."""
    raw = (hi - lo) / max(n - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw * (1 - 1e-9))
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [k * step for k in range(first, last + 1)]


def _span(values: list[float]) -> tuple[float, float]:
    """The range of finite values, widened where it is empty or a single value."""
    if not values:
        return 0.0, 1.0
    lo, hi = min(values), max(values)
    if hi - lo <= 1e-12 * max(abs(lo), abs(hi), 1e-300):
        pad = abs(lo) * 0.1 or 1.0
        return lo - pad, hi + pad
    return lo, hi


def line_chart_svg(series: Mapping[str, Sequence[Any]], *, x: Sequence[float] | None = None,
                   thresholds: Mapping[str, float] | None = None, title: str = "",
                   x_label: str = "epoch", y_label: str = "", width: int = 520,
                   height: int = 280) -> str:
    """A static inline SVG line chart (no JavaScript): one ``<path class="series">`` per series
    over ``x`` (default 0, 1, ...), with dashed horizontal lines at ``thresholds`` (label ->
    value; a label that names a series takes its colour), ticks, labelled axes and a legend.

    None, NaN and Inf values are gaps; a point alone is drawn as a dot; a constant series or a
    single point gets a range around its value.
    """
    thresholds = dict(thresholds or {})
    n = max((len(v) for v in series.values()), default=0)
    xs = [_finite(v) for v in (x if x is not None else range(n))]
    pts = {name: [(a, _finite(b)) for a, b in zip(xs, ys, strict=False)]
               for name, ys in series.items()}
    x0, x1 = _span([a for a in xs if a is not None])
    y0, y1 = _span([b for p in pts.values() for a, b in p if a is not None and b is not None]
                   + [v for v in map(_finite, thresholds.values()) if v is not None])
    xt, yt = _ticks(x0, x1), _ticks(y0, y1)
    x0, x1, y0, y1 = min(x0, xt[0]), max(x1, xt[-1]), min(y0, yt[0]), max(y1, yt[-1])
    left, top, right, bottom = 58, 28 if title else 12, 14, 56
    pw, ph = width - left - right, height - top - bottom

    def sx(v: float) -> float:
        return left + (v - x0) / (x1 - x0) * pw

    def sy(v: float) -> float:
        return top + (y1 - v) / (y1 - y0) * ph

    colour = {name: _PALETTE[i % len(_PALETTE)] for i, name in enumerate(series)}
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="system-ui, sans-serif" '
           f'font-size="11" role="img"><title>{_e(title or y_label or "chart")}</title>',
           f'<rect x="0" y="0" width="{width}" height="{height}" fill="white"/>']
    if title:
        out.append(f'<text x="{left}" y="17" font-size="13" font-weight="bold">{_e(title)}'
                   "</text>")
    for t in yt:
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{sy(t):.1f}" y2="{sy(t):.1f}" '
                   f'stroke="#d0d7de" stroke-width="0.5"/><text x="{left - 5}" '
                   f'y="{sy(t) + 4:.1f}" text-anchor="end" fill="{GREY}">{t:.4g}</text>')
    for t in xt:
        out.append(f'<line x1="{sx(t):.1f}" x2="{sx(t):.1f}" y1="{top + ph}" '
                   f'y2="{top + ph + 4}" stroke="{GREY}"/><text x="{sx(t):.1f}" '
                   f'y="{top + ph + 16}" text-anchor="middle" fill="{GREY}">{t:.4g}</text>')
    out.append(f'<path d="M{left},{top}V{top + ph}H{left + pw}" fill="none" stroke="{GREY}"/>')
    out.append(f'<text x="{left + pw / 2:.1f}" y="{top + ph + 32}" text-anchor="middle">'
               f'{_e(x_label)}</text>')
    if y_label:
        out.append(f'<text transform="translate(14,{top + ph / 2:.1f}) rotate(-90)" '
                   f'text-anchor="middle">{_e(y_label)}</text>')
    for name, value in thresholds.items():
        v = _finite(value)
        if v is not None:
            c = colour.get(name, GREY)
            out.append(f'<line class="threshold" x1="{left}" x2="{left + pw}" y1="{sy(v):.1f}" '
                       f'y2="{sy(v):.1f}" stroke="{c}" stroke-dasharray="5 4"/><text '
                       f'x="{left + 4}" y="{sy(v) - 3:.1f}" fill="{c}">'
                       f'{_e(name)} {v:g}</text>')
    for name, p in pts.items():
        d, pen = [], "M"
        for a, b in p:
            if a is None or b is None:
                pen = "M"
                continue
            d.append(f"{pen}{sx(a):.1f},{sy(b):.1f}")
            pen = "L"
        # a point alone (a gap on each side) is a zero-length segment: a dot with round caps
        text = "".join(s + ("l0,0" if s[0] == "M" and (i + 1 == len(d) or d[i + 1][0] == "M")
                            else "") for i, s in enumerate(d))
        out.append(f'<path class="series" d="{text}" fill="none" stroke="{colour[name]}" '
                   'stroke-width="2" stroke-linecap="round" stroke-linejoin="round"/>')
    lx = left
    for name in series:
        out.append(f'<line x1="{lx}" x2="{lx + 16}" y1="{height - 9}" y2="{height - 9}" '
                   f'stroke="{colour[name]}" stroke-width="2"/><text x="{lx + 20}" '
                   f'y="{height - 5}">{_e(name)}</text>')
        lx += 30 + 7 * len(str(name))
    return "".join(out) + "</svg>"


def overfit_html(title: str, verdict: Mapping[str, Any], history: Sequence[Mapping[str, Any]],
                 reading: Mapping[str, Any] | None = None, *,
                 thresholds: Mapping[str, float] | None = None, still_learning: str = "",
                 command: str = "gatrank.diagnose(model, graphs)") -> str:
    """An overfit test: ``title``, its verdict (:func:`verdict_html`), its curves (the loss;
    pairwise accuracy, Spearman and score std with the pass thresholds of ``thresholds``, e.g.
    :data:`gatrank.checks.verdict.THRESHOLDS`) and, where it failed, the causes of the doctor's
    ``reading`` of its history (:func:`causes_html`, suggesting ``command`` for the rest)."""
    t = thresholds or {}
    x = [h.get("epoch", i) for i, h in enumerate(history)]
    ranking = [k for k in ("pairwise_accuracy", "spearman", "score_std")
               if any(k in h for h in history)]
    charts = [line_chart_svg({"loss": [h.get("loss") for h in history]}, x=x, title="loss",
                             y_label="loss")]
    if ranking:
        charts.append(line_chart_svg({k: [h.get(k) for h in history] for k in ranking}, x=x,
                                     thresholds={k: t[k] for k in ranking if k in t},
                                     title="ranking"))
    figure = ("<div style='display:flex;flex-wrap:wrap;gap:12px'>"
              + "".join(f"<div>{c}</div>" for c in charts) + "</div>")
    read = ("" if reading is None else _section("The doctor's reading of this run's history")
            + causes_html(reading, command=command))
    return heading(title) + verdict_html(verdict, still_learning=still_learning) + figure + read
