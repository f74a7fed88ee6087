"""When the suite's notebooks run: as many at once as there are cores, none before the
notebooks it needs (05_eval reads 04_full_train's checkpoint), the longest chain first.

:func:`run_concurrently` is plain scheduling over callables (no notebooks, no kernels), so its
order and its failure handling are tested without a kernel; :func:`default_jobs` and
:func:`kernel_threads` size it to the machine.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TypeVar

__all__ = ["cpu_count", "available_memory_gb", "default_jobs", "kernel_threads",
           "start_order", "run_concurrently", "KERNEL_MEMORY_GB"]

logger = logging.getLogger(__name__)

R = TypeVar("R")

KERNEL_MEMORY_GB = 1.5
"""Memory one notebook kernel may need at its peak: a kernel of the default suite peaks at
0.72 GB resident (the largest ``ps`` RSS sampled every 0.5 s through ``gatrank suite`` on the
embedded data, 2 kernels at once); the margin is for a user's larger graphs."""


def cpu_count() -> int:
    """The cores this process may run on (its affinity mask, else ``os.cpu_count()``)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def available_memory_gb() -> float | None:
    """``MemAvailable`` from ``/proc/meminfo`` in GiB (None where there is none)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def default_jobs(n_notebooks: int) -> int:
    """Notebooks to run at once: the CPU count, capped by free memory
    (:data:`KERNEL_MEMORY_GB` per kernel) and by the number of notebooks; at least 1."""
    jobs = cpu_count()
    mem = available_memory_gb()
    if mem is not None:
        jobs = min(jobs, int(mem // KERNEL_MEMORY_GB))
    return max(1, min(jobs, n_notebooks))


def kernel_threads(jobs: int, threads: int | None) -> int | None:
    """CPU threads per kernel: ``threads`` when given; with one notebook at a time torch's own
    choice (None); else the cores shared out, so concurrent kernels do not oversubscribe them."""
    if threads:
        return threads
    if jobs <= 1:
        return None
    return max(1, cpu_count() // jobs)


def _chain_lengths(names: Sequence[str], needs: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """Per notebook, the length of the longest chain of notebooks that wait on it (itself
    included): the ones that hold others up start first."""
    waiting: dict[str, list[str]] = {n: [] for n in names}
    for n in names:
        for dep in needs.get(n, ()):
            if dep in waiting:
                waiting[dep].append(n)
    memo: dict[str, int] = {}

    def length(n: str, seen: tuple[str, ...] = ()) -> int:
        if n in seen:
            raise ValueError(f"notebooks need each other in a cycle: {' -> '.join(seen + (n,))}")
        if n not in memo:
            memo[n] = 1 + max((length(m, seen + (n,)) for m in waiting[n]), default=0)
        return memo[n]

    return {n: length(n) for n in names}


def start_order(names: Sequence[str], needs: Mapping[str, Sequence[str]] | None = None
                ) -> list[str]:
    """The order in which :func:`run_concurrently` prefers to start ``names`` when they are
    ready: the longest chain of names waiting on one first, then ``names`` order."""
    chain = _chain_lengths(names, needs or {})
    order = {n: i for i, n in enumerate(names)}
    return sorted(names, key=lambda n: (-chain[n], order[n]))


def run_concurrently(
    names: Sequence[str],
    run_one: Callable[[str], R],
    *,
    jobs: int,
    needs: Mapping[str, Sequence[str]] | None = None,
    on_start: Callable[[str, list[str]], None] | None = None,
    on_done: Callable[[str, R, list[str]], None] | None = None,
) -> dict[str, R]:
    """Run ``run_one(name)`` for every name, up to ``jobs`` at once in threads.

    A name starts once every name it ``needs`` (among ``names``; others are ignored) has
    finished, whatever their outcome: a notebook whose input failed still runs and reports its
    own error, as in a sequential run. Among the names ready to start, those with the longest
    chain of names waiting on them go first, then ``names`` order. ``on_start(name, running)``
    and ``on_done(name, result, running)`` are called in the scheduling thread with the names
    running at that moment.

    Returns:
        The results by name, in ``names`` order.

    Raises:
        The first exception a ``run_one`` raised, after the ones already running have finished
        (none are started after it).
    """
    needs = needs or {}
    order = {n: i for i, n in enumerate(names)}
    pending = start_order(names, needs)
    done: dict[str, R] = {}
    running: dict[Future[R], str] = {}
    failure: BaseException | None = None

    def ready(n: str) -> bool:
        return all(d in done or d not in order for d in needs.get(n, ()))

    with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="gatrank-nb") as pool:
        while pending or running:
            while failure is None and len(running) < jobs:
                nxt = next((n for n in pending if ready(n)), None)
                if nxt is None:
                    break
                pending.remove(nxt)
                running[pool.submit(run_one, nxt)] = nxt
                if on_start is not None:
                    on_start(nxt, sorted(running.values(), key=order.__getitem__))
            if not running:
                break  # a failure stopped new starts, or nothing left can start
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in sorted(finished, key=lambda f: order[running[f]]):
                name = running.pop(fut)
                exc = fut.exception()
                if exc is not None:
                    failure = failure or exc
                    continue
                done[name] = fut.result()
                if on_done is not None:
                    on_done(name, done[name], sorted(running.values(), key=order.__getitem__))
    if failure is not None:
        raise failure
    return {n: done[n] for n in names}
