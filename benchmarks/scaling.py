"""Scaling: time and peak memory of check-data and of loading, by number of graphs.

Synthetic data sets (``.pt`` graph files, 8-30 nodes each) of growing size; each measurement in
a fresh process (peak memory as in the loss benchmark). Linear growth means a log-log slope of
about 1; it is taken between the two largest sizes, where fixed start-up costs no longer hide
the growth, on CPU time (wall time on a shared machine also counts waiting for a core) and on
peak memory. Target: slope <= 1.15.
"""

from __future__ import annotations

import logging
import math
import shutil

from benchmarks.common import Check, Options, Section, peak_rss_run

__all__ = ["run", "SLOPE_TARGET", "loglog_slope"]

logger = logging.getLogger(__name__)

SLOPE_TARGET = 1.15

_SETUP = """
from gatrank.data import check_manifest, load_graphs
manifest = {manifest!r}
"""
REPEAT = {"quick": 3, "full": 1}
"""Calls per fresh process; the best CPU time is kept. In quick mode a call takes 0.3-6 s,
and one call's CPU time on a shared machine varies by 10-20%, which between sizes 4x apart
moves the slope by up to 0.13; the full mode's calls (up to a minute) vary far less."""

_CALLS = {
    "check-data": "report = check_manifest(manifest)\nextra = {'ok': report.ok}",
    "load": "gs = load_graphs(manifest)\nextra = {'graphs': len(gs)}",
}
_REPEATED = """
import gc as _gc
_cpu = []
for _ in range({repeat}):
    _gc.collect()
    _c = time.process_time()
{call}
    _cpu.append(time.process_time() - _c)
    extra['call_cpu_seconds'] = min(_cpu)
    if _ < {repeat} - 1:
        del {result}
"""


def _repeated(name: str, repeat: int) -> str:
    """The call of ``name`` made ``repeat`` times in one process, its result freed between calls
    (so the peak is one call's), the best CPU time in ``extra['call_cpu_seconds']``."""
    call = "\n".join("    " + line for line in _CALLS[name].splitlines())
    result = _CALLS[name].split(" = ", 1)[0]
    return _REPEATED.format(repeat=repeat, call=call, result=result)


def loglog_slope(sizes: list[float], values: list[float]) -> float:
    """Least-squares slope of log(value) against log(size): 1 is linear growth."""
    pts = [(math.log(n), math.log(max(v, 1e-9))) for n, v in zip(sizes, values, strict=True)]
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sxx


def run(opts: Options) -> Section:
    from gatrank.datasets import write_dataset

    sizes = [250, 1_000, 4_000] if opts.quick else [1_000, 10_000, 100_000]
    repeat = REPEAT["quick" if opts.quick else "full"]
    sec = Section(
        key="scaling",
        title="Scaling with the number of graphs (synthetic .pt graphs)",
        method=(
            "`gatrank datasets write synthetic` at each size, then check_manifest (what "
            "`gatrank check-data` runs) and load_graphs, each in a fresh process that calls it "
            f"{repeat} time(s) (freeing the result between calls): mean wall time, best CPU "
            "time, "
            "and extra peak memory (RSS above the process after its imports). Slope: "
            "log-log slope between the two largest sizes (1.0 = linear), on CPU time and peak "
            "memory."
        ),
        columns=["graphs", "check-data s", "check-data CPU s", "check-data peak MB", "load s",
                 "load CPU s", "load peak MB", "load CPU ms per graph"],
    )
    root = opts.workdir / "scaling"
    results: dict[str, dict[str, list[float]]] = {k: {"cpu": [], "mb": []} for k in _CALLS}
    try:
        for n in sizes:
            shutil.rmtree(root, ignore_errors=True)
            manifest = write_dataset("synthetic", root, n=n, seed=0)
            row = {"graphs": n}
            for name, call in _CALLS.items():
                res = peak_rss_run(_SETUP.format(manifest=str(manifest)), _repeated(name, repeat),
                                   threads=opts.threads)
                cpu = res["extra"]["call_cpu_seconds"]
                results[name]["cpu"].append(cpu)
                results[name]["mb"].append(res["peak_mb"])
                row[f"{name} s"] = res["seconds"] / repeat
                row[f"{name} CPU s"] = cpu
                row[f"{name} peak MB"] = res["peak_mb"]
            row["load CPU ms per graph"] = 1e3 * row["load CPU s"] / n
            sec.rows.append(row)
            logger.info("scaling n=%d: %s", n, row)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    for name in _CALLS:
        for what, unit in (("cpu", "CPU time"), ("mb", "peak memory")):
            slope = loglog_slope(sizes[-2:], results[name][what][-2:])
            sec.checks.append(Check(f"{name} {unit} growth (log-log slope)", slope, "<=",
                                    SLOPE_TARGET))
    return sec
