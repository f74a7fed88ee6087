"""Benchmark results as JSON and as the generated markdown page (docs/benchmarks.md)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmarks.common import REFERENCE_WORKLOAD, Section, fmt

__all__ = ["to_json", "merge_reports", "read_report", "render_markdown", "write_reports",
           "console_summary", "ReportError"]


class ReportError(ValueError):
    """An existing benchmarks.json that cannot be merged into (names the file and the fault)."""

_COMMON_METHOD = (
    "Timings are the best of several runs, competitors alternating (A, B, A, B, ...), so load "
    "from other processes on a shared machine slows both and the least disturbed run counts. "
    "Timed code runs with the stated number of torch threads. Peak memory cannot be read with "
    "`tracemalloc` (it does not see torch's allocator): each memory figure comes from a fresh "
    "Python process that builds its inputs, resets the kernel's peak-RSS mark "
    "(`/proc/self/clear_refs`), runs the measured call once and reports its peak resident size "
    "(`VmHWM`) minus the resident size before the call (`VmRSS`): the call's own extra memory, "
    "interpreter and imports excluded."
)


def to_json(sections: list[Section], machine: dict[str, Any], *, quick: bool,
            command: str, seconds: float) -> dict[str, Any]:
    """One run's report. ``runs`` lists the runs whose sections the report holds (here one);
    each section's ``run`` is its index there (see :func:`merge_reports`)."""
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    run = {"created": created, "command": command, "seconds": round(seconds, 1),
           "machine": machine}
    return {
        **run,
        "mode": "quick" if quick else "full",
        "passed": all(s.passed for s in sections),
        "runs": [run],
        "sections": [{**s.to_dict(), "run": 0} for s in sections],
    }


def _runs(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The report's runs; a report written before runs were recorded is one run."""
    if "runs" in report:
        return report["runs"]
    return [{k: report.get(k) for k in ("created", "command", "seconds", "machine")}]


def read_report(path: str | Path) -> dict[str, Any] | None:
    """The report at ``path`` (None when there is none), checked enough to merge into."""
    import json

    p = Path(path)
    if not p.is_file():
        return None
    try:
        report = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ReportError(f"{p}: not readable as JSON ({e}); remove it or write elsewhere "
                          "with --out") from e
    if not isinstance(report, dict):
        raise ReportError(f"{p}: not a benchmarks report (a JSON {type(report).__name__}, "
                          "expected an object)")
    # a report written before runs were recorded keeps its one run's fields at the top
    required = ("mode", "sections") + (() if "runs" in report else ("machine", "created",
                                                                      "command"))
    missing = [k for k in required if k not in report]
    if missing:
        raise ReportError(f"{p}: not a benchmarks report (no {', '.join(missing)})")
    for i, sec in enumerate(report["sections"]):
        if not isinstance(sec, dict) or "key" not in sec:
            raise ReportError(f"{p}: sections[{i}] has no 'key'")
    return report


def merge_reports(old: dict[str, Any] | None, new: dict[str, Any],
                  order: tuple[str, ...] | list[str] = ()) -> dict[str, Any]:
    """``new``'s sections in place of ``old``'s of the same key; ``old``'s others kept.

    What ``python -m benchmarks --only data`` does to the page: the rerun sections replace
    theirs and the rest stay as measured, each section pointing at the run (command, date,
    machine) that produced it. Sections follow ``order`` (then any others, old before new). A
    report of another mode (quick against full) is not merged: ``new`` replaces it.
    """
    if old is None or old.get("mode") != new["mode"]:
        return new
    old_runs, new_runs = _runs(old), _runs(new)
    fresh = {s["key"] for s in new["sections"]}
    kept = [{**s, "run": s.get("run", 0)} for s in old["sections"] if s["key"] not in fresh]
    added = [{**s, "run": s.get("run", 0) + len(old_runs)} for s in new["sections"]]
    rank = {k: i for i, k in enumerate(order)}
    sections = sorted(kept + added, key=lambda s: rank.get(s["key"], len(rank)))
    # drop the runs no section comes from any more, and renumber
    runs = old_runs + new_runs
    used = sorted({s["run"] for s in sections})
    renumber = {r: i for i, r in enumerate(used)}
    for s in sections:
        s["run"] = renumber[s["run"]]
    runs = [runs[r] for r in used]
    newest = new_runs[-1]
    return {
        "created": newest["created"],
        "command": " ; ".join(r["command"] for r in runs),
        "seconds": round(sum(r["seconds"] or 0 for r in runs), 1),
        "machine": newest["machine"],
        "mode": new["mode"],
        "passed": all(c["passed"] for s in sections for c in s["checks"]),
        "runs": runs,
        "sections": sections,
    }


def _cell(v: Any) -> str:
    if v is None or v == "":
        return ""
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if v != v:
            return "n/a"
        if v == 0:
            return "0"
        if abs(v) < 1e-3:
            return f"{v:.1e}"
        return fmt(v)
    return str(v).replace("|", "\\|")


def _table(columns: list[str], rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(_cell(r.get(c)) for c in columns) + " |")
    return lines


def _reference(machine: dict[str, Any] | None) -> str:
    """``start / end`` of the run's reference workload (either may be missing)."""
    m = machine or {}
    start, end = m.get("reference_s"), m.get("reference_end_s")
    if end is None:
        return _cell(start)
    return f"{_cell(start) or '?'} / {_cell(end)}"


def render_markdown(report: dict[str, Any]) -> str:
    """The docs page: every figure with its target, the machine, and how it was measured."""
    runs = _runs(report)
    out = ["# Benchmarks", ""]
    if len(runs) == 1:
        out.append(f"Generated by `{report['command']}` ({report['mode']} mode, "
                   f"{report['seconds']:.0f} s) on {report['created']}. Do not edit by hand: "
                   "rerun the command.")
    else:
        out += [f"Generated by {len(runs)} runs ({report['mode']} mode): `--only` reruns "
                "replace their sections and keep the others as measured. Do not edit by hand: "
                "rerun the commands.", "",
                "| run | command | sections | s | created | reference s (start / end) |",
                "|---|---|---|---|---|---|"]
        for i, r in enumerate(runs):
            secs = ", ".join(s["key"] for s in report["sections"] if s.get("run", 0) == i)
            out.append(f"| {i + 1} | `{r['command']}` | {secs} | {_cell(r['seconds'])} | "
                       f"{r['created']} | {_reference(r['machine'])} |")
        out.append("")
    out += [
        "`python -m benchmarks --quick` is the CI mode: smaller sizes, the same targets, exit "
        "status 1 when a target is missed.",
        "",
        "## Targets",
        "",
        "| figure | measured | target | |",
        "|---|---|---|---|",
    ]
    for sec in report["sections"]:
        if sec["skipped"]:
            out.append(f"| {sec['title']} | skipped: {sec['skipped']} | | |")
        for c in sec["checks"]:
            out.append(f"| {c['name']} | {_cell(c['value'])} {c['unit']} | {c['op']} "
                       f"{_cell(c['target'])} {c['unit']} | {'pass' if c['passed'] else 'MISS'} |")
    out += [
        "",
        "## Machine",
        "",
        "| |" + "".join(f" run {i + 1} |" for i in range(len(runs))) if len(runs) > 1
        else "| | |",
        "|---|" + "---|" * len(runs),
    ]
    for key in ("cpu", "cores", "memory_gb", "gpu", "reference_s", "load_average_at_start",
                "torch_threads", "platform", "python", "torch", "torch_geometric", "numpy",
                "scipy"):
        if key == "reference_s":
            cells = " | ".join(_reference(r["machine"]) for r in runs)
            out.append(f"| reference s (start / end) | {cells} |")
            continue
        cells = " | ".join(_cell((r["machine"] or {}).get(key)) for r in runs)
        out.append(f"| {key.replace('_', ' ')} | {cells} |")
    out += ["", f"'reference s': {REFERENCE_WORKLOAD}, timed as the run starts and as it "
            "ends. On a shared VM the same code runs up to 2x slower on one day than on "
            "another (and drifts within a run), so absolute times on pages made at different "
            "times compare only in its proportion; ratios measured within a run do not need it.",
            ""]
    out += ["## How it is measured", "", _COMMON_METHOD, ""]
    for sec in report["sections"]:
        out += [f"## {sec['title']}", ""]
        if len(runs) > 1:
            r = sec.get("run", 0)
            out += [f"Run {r + 1} (`{runs[r]['command']}`, {runs[r]['created']}).", ""]
        out += [sec["method"], ""]
        if sec["skipped"]:
            out += [f"Skipped: {sec['skipped']}.", ""]
            continue
        out += _table(sec["columns"], sec["rows"])
        out.append("")
        for c in sec["checks"]:
            out.append(f"- {'pass' if c['passed'] else '**MISS**'}: {c['name']} = "
                       f"{_cell(c['value'])} {c['unit']} (target {c['op']} {_cell(c['target'])} "
                       f"{c['unit']})")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def write_reports(report: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``benchmarks.json`` and ``benchmarks.md`` into ``out_dir``; return both paths."""
    from gatrank.io import atomic_write_text, write_json

    out = Path(out_dir)
    json_path, md_path = out / "benchmarks.json", out / "benchmarks.md"
    write_json(json_path, report)
    atomic_write_text(md_path, render_markdown(report))
    return json_path, md_path


def console_summary(sections: list[Section]) -> str:
    """One line per target (``ok`` / ``MISS``) and per skipped section."""
    lines = []
    for sec in sections:
        if sec.skipped:
            lines.append(f"skip {sec.title}: {sec.skipped}")
        lines += [c.line() for c in sec.checks]
    return "\n".join(lines)
