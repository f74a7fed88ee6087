"""Data: first load of nci-tpsa (featurizing every SMILES on all cores) against the cached load,
and many graph files loaded on a process pool against one process.

SMILES: both loads run in one fresh process with an empty cache folder; the cached load is
repeated and its best time kept. Target: the cached load at least 10x faster than the first.

Graph files: N small synthetic ``.pt`` graphs (what ``gatrank datasets write synthetic`` writes)
plus a few broken rows, loaded by ``load_graphs`` with one process and with the pool (its
default: every core) in turns in one fresh process, best of a few rounds each; graphs, table
and problems are compared. Target: the pool at least 1.7x faster at 100k graphs (on 2 cores;
full mode), and at every size in both modes at least 0.8 of this machine's own two-process ceiling,
measured in the same run (two forked processes loading half the files each, against one
alone); the size from which the pool starts (``_POOL_MIN_FILES``) is measured too, untargeted.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from benchmarks.common import Check, Options, Section, peak_rss_run

__all__ = ["run", "CACHE_SPEEDUP_TARGET", "POOL_SPEEDUP_TARGET", "POOL_EFFICIENCY_TARGET"]

logger = logging.getLogger(__name__)

CACHE_SPEEDUP_TARGET = 10.0
POOL_SPEEDUP_TARGET = 1.7
"""First load of 100k graph files (``POOL_SPEEDUP_AT``): the pool against one process, on 2
cores. At 10k files it is measured and held to the ceiling ratio only: there the parent's serial
part is a larger share, and this machine's two-process ceiling itself was 1.43x (full run of
2026-12-03), below any absolute 1.7x."""
POOL_SPEEDUP_AT = 100_000
POOL_EFFICIENCY_TARGET = 0.8
"""The pool's speedup over what two independent processes reach on the same machine in the
same run (median over rounds): on a shared VM whose two vCPUs run Python-heavy work 15-25%
slower side by side than alone (measured), 1.7x is out of any loader's reach; this ratio is
what the pool controls. Its own costs keep it below 1: the parent's serial part (reading the
manifest, building the GraphSet: 0.2-0.3 s of a ~4 s load at 10k files) and unpacking the
results (0.05-0.3 s, competing with the workers for the two cores). Measured 0.82-0.96 in
consecutive runs of the same code on one machine."""
FILE_SIZES = {"quick": (5_000,), "full": (10_000, 100_000)}
FILE_ROUNDS = {"quick": {5_000: 5}, "full": {10_000: 5, 100_000: 2}}
"""Rounds per size, each timing one process, the pool and the ceiling in a turning order: at
10k one round takes about 40 s, at 100k about 7 minutes (one process alone: ~150 s); quick mode
(CI) loads 5k files, 5 rounds."""
_DISTINCT = 2_000  # distinct synthetic graphs; the N files are copies of them
_BROKEN = 20  # missing and truncated files among the N rows

_SETUP = """
import os, resource, time
from gatrank.data import load_graphs
from gatrank.datasets import write_dataset
manifest = write_dataset("nci-tpsa", {root!r} + "/nci-tpsa")
cache = {root!r} + "/cache"
cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
"""
_CALL = """
def cpu():
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
c0, t0 = cpu(), time.perf_counter()
gs = load_graphs(manifest, cache_dir=cache, on_error="skip")
first, first_cpu = time.perf_counter() - t0, cpu() - c0
cached = []
for _ in range({repeat}):
    t = time.perf_counter()
    again = load_graphs(manifest, cache_dir=cache, on_error="skip")
    cached.append(time.perf_counter() - t)
same = len(again) == len(gs) and all(
    bool((a.x == b.x).all()) and bool((a.edge_index == b.edge_index).all())
    for a, b in zip(gs.graphs, again.graphs))
extra = {{"graphs": len(gs), "first_s": first, "cached_s": min(cached), "cores": cores,
         "cores_busy": first_cpu / first, "identical": same}}
"""

_FILES_SETUP = """
import gc, logging, pathlib, resource, time
import torch
from gatrank.data import load_graphs
from gatrank.data.parallel import _cores
logging.disable(logging.WARNING)  # the broken rows' "dropped ..." warning, once per load
plan = {plan!r}  # (label, manifest, rounds)
warm = {warm!r}  # a small manifest for the untimed first call


def cpu(who):
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def timed(manifest, workers):
    gc.collect()
    me, kids, t = cpu(resource.RUSAGE_SELF), cpu(resource.RUSAGE_CHILDREN), time.perf_counter()
    gs = load_graphs(manifest, on_error="skip", num_workers=workers)
    wall = time.perf_counter() - t
    busy = (cpu(resource.RUSAGE_SELF) - me + cpu(resource.RUSAGE_CHILDREN) - kids) / wall
    return gs, wall, busy


def _load_half(rels):
    from gatrank.data.graph_files import _load_file
    root = pathlib.Path(ROOT[0])
    for rel in rels:
        _load_file(rel, root)


def ceiling(manifest):
    # this machine's own limit for two loaders: one process loading half the files alone,
    # against two independent forked processes loading a half each at once (no pool, nothing
    # shared, nothing sent back): 2 x alone / together
    import multiprocessing as mp
    import pandas as pd
    ROOT[:] = [str(pathlib.Path(manifest).parent)]
    rels = pd.read_csv(manifest)["path"].tolist()  # the broken rows too, as the loads do
    halves = [rels[0::2], rels[1::2]]
    ctx = mp.get_context("fork")

    def wall(parts):
        procs = [ctx.Process(target=_load_half, args=(h,)) for h in parts]
        t = time.perf_counter()
        for q in procs:
            q.start()
        for q in procs:
            q.join()
        return time.perf_counter() - t

    alone = wall(halves[:1])
    together = wall(halves)
    return alone, together


ROOT = [""]


def same(a, b):
    if not (a.table.equals(b.table) and a.dropped == b.dropped and len(a) == len(b)):
        return False
    for g, h in zip(a.graphs, b.graphs):
        if sorted(g.keys()) != sorted(h.keys()):
            return False
        for k in g.keys():
            u, v = g[k], h[k]
            ok = (u.dtype == v.dtype and torch.equal(u, v)) if torch.is_tensor(u) else u == v
            if not ok:
                return False
    return True
"""
_FILES_CALL = """
# untimed: first-call costs off both timings
load_graphs(warm, on_error="skip", num_workers=1)
rows = []
for label, manifest, rounds in plan:
    best = {}
    first = {}
    lims, walls = [], []
    # each round times one process, the pool and (but at the threshold) the ceiling, in an
    # order that turns round by round: a shared VM's speed drifts over minutes, and a ceiling
    # measured after the loads (as before) compared the pool with another machine's state
    modes = ["one", "pool"] + ([] if label == "threshold" else ["ceiling"])
    for r in range(rounds):
        walls.append({})
        for mode in modes[r % len(modes):] + modes[:r % len(modes)]:
            if mode == "ceiling":
                lims.append(ceiling(manifest))
                walls[-1]["ceiling"] = lims[-1]
                continue
            gs, wall, busy = timed(manifest, 1 if mode == "one" else None)
            walls[-1][mode] = wall
            if mode not in first:
                first[mode] = gs
            if wall < best.get(mode, (float("inf"),))[0]:
                best[mode] = (wall, busy)
            del gs
    lim = (min(a for a, _ in lims), min(t for _, t in lims)) if lims else None
    rows.append({"label": label, "graphs": len(first["one"]), "dropped": len(first["one"].dropped),
                 "one": best["one"], "pool": best["pool"], "ceiling": lim, "rounds": walls,
                 "identical": same(first["one"], first["pool"])})
    del first
extra = {"rows": rows, "cores": _cores()}
"""


def _write_files(root: Path, sizes: list[int]) -> dict[int, str]:
    """A manifest of N graph files per size: copies of ``_DISTINCT`` synthetic graphs (writing
    100k graphs one by one takes minutes, copying them seconds; loading costs the same), plus
    ``_BROKEN`` rows of missing and truncated files."""
    import pandas as pd

    from gatrank.datasets import write_dataset

    src = write_dataset("synthetic", root / "src", n=_DISTINCT, seed=0)
    table = pd.read_csv(src)
    blobs = [(src.parent / p).read_bytes() for p in table["path"]]
    files = root / "files"
    files.mkdir()
    for k in range(max(sizes)):
        (files / f"g{k:06d}.pt").write_bytes(blobs[k % _DISTINCT])
    for k in range(_BROKEN // 2):
        (files / f"trunc{k}.pt").write_bytes(blobs[k][: len(blobs[k]) // 2])
    manifests = {}
    for n in sizes:
        ys = table["y"].tolist()
        lines = ["id,y,path"] + [f"g{k:06d},{ys[k % _DISTINCT]},files/g{k:06d}.pt"
                                 for k in range(n - _BROKEN)]
        lines += [f"missing{k},1.0,files/missing{k}.pt" for k in range(_BROKEN // 2)]
        lines += [f"trunc{k},1.0,files/trunc{k}.pt" for k in range(_BROKEN // 2)]
        path = root / f"manifest_{n}.csv"
        path.write_text("\n".join(lines) + "\n")
        manifests[n] = str(path)
    return manifests


def _efficiency(rounds: list[dict[str, Any]]) -> float:
    """The median over rounds of the pool's speedup over one process divided by the two-process
    ceiling, each ratio of times taken within one round: a shared VM's speed drifts over
    minutes, and the best of each mode, taken in different rounds, compares different states of
    the machine (the same code gave 0.78 to 1.03 that way)."""
    import statistics

    ratios = [(w["one"] / w["pool"]) / (2 * w["ceiling"][0] / w["ceiling"][1]) for w in rounds]
    return statistics.median(ratios)


def _files_rows(opts: Options) -> tuple[list[dict[str, Any]], list[Check]]:
    from gatrank.data.parallel import _POOL_MIN_FILES

    sizes = list(FILE_SIZES["quick" if opts.quick else "full"])
    root = opts.workdir / "data-files"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    try:
        mode = "quick" if opts.quick else "full"
        manifests = _write_files(root, [_POOL_MIN_FILES, *sizes])
        # the threshold's row has no target: quick mode (CI) leaves it to the full run
        plan = [] if opts.quick else [("threshold", manifests[_POOL_MIN_FILES], 5)]
        plan += [(f"{n}", manifests[n], FILE_ROUNDS[mode][n]) for n in sizes]
        # torch's default threads, as in a user's process (the workers set their own to 1)
        res = peak_rss_run(_FILES_SETUP.format(plan=plan, warm=manifests[_POOL_MIN_FILES]),
                           _FILES_CALL, threads=0)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    cores = res["extra"]["cores"]
    rows, checks = [], []
    for r in res["extra"]["rows"]:
        (one_s, _), (pool_s, pool_busy) = r["one"], r["pool"]
        speedup = one_s / pool_s
        at_threshold = r["label"] == "threshold"
        rows.append({"load": "graph files (.pt), pool vs one process"
                             + (" (the pool's threshold)" if at_threshold else ""),
                     "graphs": r["graphs"] + r["dropped"], "cores": cores,
                     "baseline s": one_s, "s": pool_s, "speedup": speedup,
                     "cores busy": pool_busy, "identical": r["identical"]})
        # the threshold's row justifies it and has no target: its ~0.15 s gain is gone
        # whenever another process holds a core, which on a shared CI machine is often
        if not at_threshold:
            n = f"{r['graphs'] + r['dropped']:,}"
            alone, together = r["ceiling"]
            limit = 2 * alone / together
            rows.append({"load": "two independent processes, half the files each (this "
                                 "machine's ceiling for two loaders)", "graphs": r["graphs"],
                         "cores": cores, "baseline s": 2 * alone, "s": together,
                         "speedup": limit, "cores busy": None, "identical": None})
            if not opts.quick and r["graphs"] + r["dropped"] >= POOL_SPEEDUP_AT:
                checks.append(Check(f"first load of {n} graph files, pool over one process",
                                    speedup, ">=", POOL_SPEEDUP_TARGET, "x"))
            checks.append(Check(f"first load of {n} graph files, pool speedup / this "
                                "machine's two-process ceiling (median over rounds)",
                                _efficiency(r["rounds"]), ">=", POOL_EFFICIENCY_TARGET))
    checks.append(Check("pool: graphs, table and problems identical to one process",
                        float(all(r["identical"] for r in rows
                                  if r["identical"] is not None)), ">=", 1.0))
    return rows, checks


def run(opts: Options) -> Section:
    root = opts.workdir / "data"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    repeat = 5  # the cached load takes ~0.1 s: best of 5 in both modes steadies the ratio
    try:
        # torch's default threads for both loads, as in a user's process: pinning the cached
        # load to one thread while the first load's pool uses every core would tilt the ratio
        res = peak_rss_run(_SETUP.format(root=str(root)), _CALL.format(repeat=repeat),
                           threads=0)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    x = res["extra"]
    speedup = x["first_s"] / x["cached_s"]
    file_rows, file_checks = _files_rows(opts)
    sizes = ", ".join(f"{n:,}" for n in FILE_SIZES["quick" if opts.quick else "full"])
    sec = Section(
        key="data",
        title="Data loading (SMILES featurization cache; graph files on a process pool)",
        method=(
            "SMILES (nci-tpsa): a fresh process, an empty cache folder: first load_graphs "
            "(RDKit featurization on a process pool over every core) as the baseline, then the "
            f"cached load, best of {repeat}. Graph files: {sizes} synthetic .pt graphs (copies "
            f"of {_DISTINCT:,} written by `gatrank datasets write synthetic`; {_BROKEN} of the "
            "rows missing or truncated files), loaded with on_error='skip' by one process "
            "(num_workers=1, the baseline) and by the pool (the default: every core) in turns "
            "in one fresh process, best of a few rounds each; the first row is the file count "
            "from which the pool starts. All loads with torch's default threads, as "
            "load_graphs runs in a user's process. 'cores busy' = CPU time of the process and "
            "its workers / wall time (SMILES: of the first load). 'identical': the same "
            "graphs (every tensor and attribute), table and problems. 'peak MB' (SMILES): extra "
            "peak RSS of the process over both loads; the scaling section measures the peak "
            "memory of loading graph files."
        ),
        columns=["load", "graphs", "cores", "baseline s", "s", "speedup", "cores busy",
                 "identical", "peak MB"],
        rows=[{"load": "SMILES, cached vs first (featurizing) load", "graphs": x["graphs"],
               "cores": x["cores"], "baseline s": x["first_s"], "s": x["cached_s"],
               "speedup": speedup, "cores busy": x["cores_busy"], "identical": x["identical"],
               "peak MB": res["peak_mb"]}, *file_rows],
    )
    sec.checks = [
        Check("cached load speedup over the first load", speedup, ">=", CACHE_SPEEDUP_TARGET,
              "x"),
        Check("cached graphs identical to the first load", float(x["identical"]), ">=", 1.0),
        *file_checks,
    ]
    logger.info("data: %s (cpu count %s)", sec.rows, os.cpu_count())
    return sec
