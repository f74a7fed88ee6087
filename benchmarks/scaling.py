"""Scaling: time and peak memory of check-data and of loading, by number of graphs.

Synthetic data sets (``.pt`` graph files, 8-30 nodes each) of growing size; each measurement in
a fresh process (peak memory as in the loss benchmark). Linear growth means a log-log slope of
about 1; it is taken between the two largest sizes, where fixed start-up costs no longer hide
the growth, on CPU time (wall time on a shared machine also counts waiting for a core) and on
peak memory. Target: slope <= 1.15. Both run in one process (``num_workers=1``): a pool's
workers would take the work off this process's CPU clock and memory (the data benchmark
measures the pool).

The CPU-time slope comes from one more process that times the function on the two largest data
sets in turns (A B, B A, ...), in units of equal work (the smaller set called as many times as
it is smaller), and keeps each size's best unit: on a shared machine one call's CPU time varies
by 10-30%, which between sizes 4x apart moves the slope by up to 0.2, and two single calls made
a minute apart meet different neighbours.
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
_CALLS = {
    "check-data": "report = check_manifest(manifest, num_workers=1)\nextra = {'ok': report.ok}",
    "load": "gs = load_graphs(manifest, num_workers=1)\nextra = {'graphs': len(gs)}",
}


_ALTERNATE = """
import gc
best = {{}}
for r in range({repeat}):
    for m, calls in (plan if r % 2 == 0 else plan[::-1]):
        gc.collect()
        c = time.process_time()
        for _ in range(calls):
            result = {fn}(m)
            del result
        best[m] = min(best.get(m, float("inf")), (time.process_time() - c) / calls)
extra = {{"best_cpu": [best[m] for m, _ in plan]}}
"""
# one process: the growth of the work itself, which a pool's workers would hide from this
# process's CPU clock (the data benchmark measures the pool)
_FUNCTIONS = {"check-data": "(lambda m: check_manifest(m, num_workers=1))",
              "load": "(lambda m: load_graphs(m, num_workers=1))"}
ALTERNATE_ROUNDS = {"quick": 3, "full": 2}


def _alternating_cpu(name: str, sizes: list[int], manifests: list[str], rounds: int,
                     threads: int) -> list[float]:
    """Best CPU time of ``name`` per call on each manifest, over ``rounds`` timed units made
    in turns. A unit on the smaller data set makes ``sizes[-1] // sizes[0]`` calls, so both
    units last about as long: a burst of load from elsewhere lasting a few seconds would
    otherwise spare short calls more often than long ones and bend the slope upwards."""
    plan = [(m, max(1, sizes[-1] // n)) for n, m in zip(sizes, manifests, strict=True)]
    setup = "from gatrank.data import check_manifest, load_graphs\nplan = " + repr(plan)
    res = peak_rss_run(setup, _ALTERNATE.format(repeat=rounds, fn=_FUNCTIONS[name]),
                       threads=threads)
    return res["extra"]["best_cpu"]


def loglog_slope(sizes: list[float], values: list[float]) -> float:
    """Least-squares slope of log(value) against log(size): 1 is linear growth."""
    pts = [(math.log(n), math.log(max(v, 1e-9))) for n, v in zip(sizes, values, strict=True)]
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sxx


def run(opts: Options) -> Section:
    from gatrank.datasets import write_dataset

    # the slopes are taken between the two largest sizes: quick mode (CI) measures only those
    sizes = [1_000, 4_000] if opts.quick else [1_000, 10_000, 100_000]
    rounds = ALTERNATE_ROUNDS["quick" if opts.quick else "full"]
    sec = Section(
        key="scaling",
        title="Scaling with the number of graphs (synthetic .pt graphs)",
        method=(
            "`gatrank datasets write synthetic` at each size, then check_manifest (what "
            "`gatrank check-data` runs) and load_graphs, each in a fresh process: wall time and "
            "CPU time and extra peak memory (RSS above the process after its imports), in one "
            "process (num_workers=1; the data section measures the pool). Slope: "
            "log-log slope between the two largest sizes (1.0 = linear), on peak memory and on "
            f"CPU time, the latter the best of {rounds} equal-work units per size timed in turns "
            "in one process."
        ),
        columns=["graphs", "check-data s", "check-data CPU s", "check-data peak MB", "load s",
                 "load CPU s", "load peak MB", "load CPU ms per graph"],
    )
    root = opts.workdir / "scaling"
    results: dict[str, dict[str, list[float]]] = {k: {"cpu": [], "mb": []} for k in _CALLS}
    manifests = []
    try:
        shutil.rmtree(root, ignore_errors=True)
        for n in sizes:
            manifest = write_dataset("synthetic", root / str(n), n=n, seed=0)
            manifests.append(str(manifest))
            row = {"graphs": n}
            for name, call in _CALLS.items():
                res = peak_rss_run(_SETUP.format(manifest=str(manifest)), call,
                                   threads=opts.threads)
                results[name]["cpu"].append(res["cpu_seconds"])
                results[name]["mb"].append(res["peak_mb"])
                row[f"{name} s"] = res["seconds"]
                row[f"{name} CPU s"] = res["cpu_seconds"]
                row[f"{name} peak MB"] = res["peak_mb"]
            row["load CPU ms per graph"] = 1e3 * row["load CPU s"] / n
            sec.rows.append(row)
            logger.info("scaling n=%d: %s", n, row)
        alternating = {name: _alternating_cpu(name, sizes[-2:], manifests[-2:], rounds,
                                              opts.threads)
                       for name in _CALLS}
        logger.info("scaling, best CPU s at %s in turns: %s", sizes[-2:], alternating)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    for name in _CALLS:
        for what, unit in (("cpu", "CPU time"), ("mb", "peak memory")):
            values = alternating[name] if what == "cpu" else results[name][what][-2:]
            slope = loglog_slope(sizes[-2:], values)
            sec.checks.append(Check(f"{name} {unit} growth (log-log slope)", slope, "<=",
                                    SLOPE_TARGET))
    return sec
