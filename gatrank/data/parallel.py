"""A manifest's graph files -> checked tensors, in this process or on a process pool.

Loading a graph file and checking it (:func:`~gatrank.data.graph_files._load_file`) costs about
a millisecond, nearly all of it in the worker's own CPU (unpickling, parsing): many files load
on every core. The rows are cut into a few chunks per worker; a worker loads and checks a chunk
and sends back its valid graphs as three concatenated numpy buffers (x, edge_index, edge_attr)
plus their shapes, and its problems as plain tuples. The parent rebuilds the tensors as views
of those buffers, chunk by chunk while the workers load the next ones. Not tensors: torch
registers multiprocessing reductions that move every tensor through a shared-memory file of
its own (one file descriptor each: slow, and 100,000 graphs would run out of descriptors).

Workers are forked where the platform allows it (Linux), whatever the default start method: a
forked worker starts in milliseconds with torch already imported and sees the parent's state
(working folder, torch version checks), where a spawned one imports torch and PyG again (4-9 s
on a 2-core machine), which only pays on very many files (``_POOL_MIN_FILES_SPAWN``). Workers
touch no CUDA and print nothing, the locks they take (imports, logging) are made afresh in a
forked child, and torch runs on one thread in them (as in DataLoader's forked workers), so a
notebook kernel, a thread or a pytest-xdist worker can start the pool (the tests do all
three). A daemonic process (a multiprocessing.Pool's worker) may not have children: it loads
in the process.
"""

from __future__ import annotations

import gc
import logging
import math
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gatrank.data.graph_files import _Graph, _load_file

logger = logging.getLogger(__name__)

__all__: list[str] = []

_POOL_MIN_FILES = 500
"""Fewer graph files than this load in this process. Starting and stopping a forked pool of 2
costs 30-40 ms on a 2-core machine, so the pool breaks even at ~100 small .pt files (0.85 ms
each) and ~300 JSON files of plain arrays (the fastest format, 0.23 ms each); at 500 .pt files
it is ~1.45x faster than one process (benchmarks/data.py measures it at this threshold)."""
_POOL_MIN_FILES_SPAWN = 20_000
"""The same for platforms without fork, whose workers import torch and PyG first."""
_CHUNKS_PER_WORKER = 4
"""At least this many chunks per worker, so the parent's unpacking overlaps the loading."""
_MAX_CHUNK = 64
"""At most this many files per chunk (~0.03 s of .pt files): a worker that finishes first waits
at most one chunk for the other (with 200, that tail cost ~3% of a 10,000-file load), and a
chunk costs well under a millisecond to send."""

_Packed = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                list[tuple[int, str, str, str, str]]]
"""One chunk's result: meta int64 ``[k, 5]`` (row, nodes, node features, edges, edge features
or -1 without edge_attr) of its k valid graphs, their x (float32), edge_index (int64) and
edge_attr (float32) flattened and concatenated, and ``(row, file, code, problem, fix)`` of
every problem, in row order."""

_Report = Callable[[int, str, str, str, str], None]  # (row, file, code, problem, fix)


def _cores() -> int:
    """The cores this process may run on (its affinity mask, not the machine's count)."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return n or 1


def _pool_context() -> multiprocessing.context.BaseContext:
    """``fork`` on Linux (fast start, see the module docstring); elsewhere the default (spawn on
    macOS and Windows, where fork is unsafe or absent)."""
    if sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context()


def _pool_workers(num_items: int, num_workers: int | None, min_items: int) -> int:
    """How many processes to load ``num_items`` on: 1 (this process) for few items, a single
    core or a daemonic process (which may not start children), else ``num_workers`` (default:
    every core)."""
    if num_workers is not None and num_workers < 0:
        raise ValueError(f"num_workers must be >= 0 (0 or 1: this process), got {num_workers}")
    workers = _cores() if num_workers is None else max(num_workers, 1)
    if workers == 1 or num_items < min_items or multiprocessing.current_process().daemon:
        return 1
    return min(workers, num_items)


def _pool_map(fn: Callable[[Any], Any], tasks: Sequence[Any], workers: int,
              initializer: Callable[[], None], what: str, chunksize: int = 1) -> Iterator[Any]:
    """``fn(task)`` of every task on ``workers`` processes, in order, each as soon as it and
    those before it are done.

    A ProcessPoolExecutor, not a multiprocessing.Pool: when a worker dies (killed for memory,
    crashed) the Pool waits forever for its task, the executor says so. An exception of ``fn``
    is raised here, in the caller, and the tasks not yet started are cancelled.
    """
    with ProcessPoolExecutor(workers, mp_context=_pool_context(),
                             initializer=initializer) as ex:
        try:
            yield from ex.map(fn, tasks, chunksize=chunksize)
        except BrokenProcessPool as exc:
            raise RuntimeError(
                f"a worker process {what} ended abruptly (killed, e.g. for lack of memory, or "
                "crashed); load with num_workers=1 to do the work in this process") from exc
        finally:
            ex.shutdown(wait=True, cancel_futures=True)


def _worker_init() -> None:
    torch.set_num_threads(1)  # one process per core already: more threads oversubscribe
    # the parent's objects are never garbage here: a collection would only scan them, and
    # writing to their headers would copy the pages fork shares with the parent
    gc.freeze()


def _load_chunk(task: tuple[str, list[tuple[int, str]]]) -> _Packed:
    """Worker: load and check ``(row, path)`` items against root folder ``task[0]``."""
    root = Path(task[0])
    meta: list[tuple[int, int, int, int, int]] = []
    xs: list[np.ndarray] = []
    eis: list[np.ndarray] = []
    eas: list[np.ndarray] = []
    problems: list[tuple[int, str, str, str, str]] = []
    for row, rel in task[1]:
        graph, found = _load_file(rel, root)
        problems += [(row, rel, *f) for f in found]
        if graph is not None:
            x, ei, ea = graph
            meta.append((row, x.shape[0], x.shape[1], ei.shape[1],
                         -1 if ea is None else ea.shape[1]))
            # numpy views of the checked tensors: numpy's per-call cost is a fraction of
            # torch's, and these are ~4 calls per file on ~1 ms of loading
            xs.append(x.numpy().reshape(-1))
            eis.append(ei.numpy().reshape(-1))
            if ea is not None:
                eas.append(ea.numpy().reshape(-1))
    return (np.array(meta, dtype=np.int64).reshape(-1, 5), _flat(xs, np.float32),
            _flat(eis, np.int64), _flat(eas, np.float32), problems)


def _flat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(parts, dtype=dtype) if parts else np.zeros(0, dtype=dtype)


def _unpack(packed: _Packed) -> Iterator[tuple[int, _Graph]]:
    """``(row, (x, edge_index, edge_attr))`` of a chunk's valid graphs: views of its buffers."""
    meta, *flat, _ = packed
    # unpickled arrays own writable memory; a read-only one would make torch warn
    x_all, ei_all, ea_all = (torch.from_numpy(a if a.flags.writeable else a.copy()) for a in flat)
    rows = meta.tolist()
    xs = torch.split(x_all, [n * f for _, n, f, _, _ in rows])
    eis = torch.split(ei_all, [2 * e for _, _, _, e, _ in rows])
    eas = iter(torch.split(ea_all, [e * d for _, _, _, e, d in rows if d >= 0]))
    for (row, n, f, e, d), x, ei in zip(rows, xs, eis, strict=True):
        yield row, (x.view(n, f), ei.view(2, e), None if d < 0 else next(eas).view(e, d))


def _chunks(items: list[tuple[int, str]], workers: int) -> list[list[tuple[int, str]]]:
    size = min(_MAX_CHUNK, math.ceil(len(items) / (workers * _CHUNKS_PER_WORKER)))
    return [items[k:k + size] for k in range(0, len(items), size)]


def _load_files(paths: list[str | None], ok_rows: list[int], root: Path,
                num_workers: int | None, tensors: dict[int, _Graph], report: _Report) -> None:
    """Load and check the rows' graph files into ``tensors``; report every file problem, in
    row order (the same problems and graphs on a pool as in this process)."""
    items = [(i, rel) for i in ok_rows if (rel := paths[i]) is not None]
    forked = _pool_context().get_start_method() == "fork"
    min_files = _POOL_MIN_FILES if forked else _POOL_MIN_FILES_SPAWN
    workers = _pool_workers(len(items), num_workers, min_files)
    if workers == 1:
        for i, rel in items:
            graph, found = _load_file(rel, root)
            for code, problem, fix in found:
                report(i, rel, code, problem, fix)
            if graph is not None:
                tensors[i] = graph
        return
    chunks = _chunks(items, workers)
    logger.info("loading %d graph files on %d worker processes (%d chunks)", len(items),
                workers, len(chunks))
    # in order, each chunk as soon as it is ready: unpacking overlaps the later chunks; an
    # UnsafeTorchError in a worker is raised here, once, and cancels the chunks not started
    for packed in _pool_map(_load_chunk, [(str(root), c) for c in chunks], workers,
                            _worker_init, "loading graph files"):
        for problem in packed[4]:
            report(*problem)
        tensors.update(_unpack(packed))
