"""Measurement helpers shared by the benchmark sections: timing, peak memory, targets.

Timing on a shared machine: every timed call is repeated and the *minimum* is kept (the run
least disturbed by other processes); two competitors are timed alternately (A, B, A, B, ...) so
a burst of load from elsewhere hits both. Peak memory: torch allocations are invisible to
``tracemalloc``, so each measurement runs in a fresh subprocess: after the imports and inputs,
the kernel's peak-RSS mark is reset (``/proc/self/clear_refs``), and the peak resident size
after the call (``VmHWM``) minus the resident size before it (``VmRSS``) is the call's extra
peak memory. Where that reset is not possible, ``ru_maxrss`` before and after is used (a lower
bound).
"""

from __future__ import annotations

import gc
import json
import logging
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Check",
    "Options",
    "Section",
    "best_time",
    "alternate",
    "peak_rss_run",
    "machine_info",
    "reference_seconds",
    "fmt",
    "REPO_ROOT",
]

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Options:
    quick: bool = False
    """CI mode: smaller sizes and fewer repeats; the same targets."""
    threads: int = 1
    """torch intra-op threads for timed code (1: stable timings on a shared machine)."""
    device: str = "cpu"
    """Device for the training-loop benchmark (``auto`` picks CUDA when present)."""
    workdir: Path = field(default_factory=lambda: Path("/tmp/gatrank-bench"))
    """Scratch folder for written data sets and caches."""


@dataclass
class Check:
    """One target: ``value op target`` (op ``>=`` or ``<=``)."""

    name: str
    value: float
    op: str
    target: float
    unit: str = ""

    @property
    def passed(self) -> bool:
        if self.value != self.value:  # NaN never passes
            return False
        return self.value >= self.target if self.op == ">=" else self.value <= self.target

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}

    def line(self) -> str:
        mark = "ok  " if self.passed else "MISS"
        return (f"{mark} {self.name}: {fmt(self.value)} {self.unit} "
                f"(target {self.op} {fmt(self.target)} {self.unit})")


@dataclass
class Section:
    key: str
    title: str
    method: str
    """How it was measured, in one or two sentences (printed on the page)."""
    columns: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    skipped: str = ""
    """Why the section did not run (empty when it ran)."""
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["checks"] = [c.to_dict() for c in self.checks]
        return d


def fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"


def best_time(fn: Callable[[], Any], repeat: int, warmup: int = 1) -> float:
    """Minimum wall time of ``fn()`` over ``repeat`` runs, after ``warmup`` untimed runs."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def alternate(fns: dict[str, Callable[[], Any]], repeat: int, warmup: int = 1,
              clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Minimum time of each function, timed in turns so load bursts hit all of them.

    The order of the turns is reversed every other round (A B, B A, A B, ...): on a shared
    machine the time of a run drifts with what ran before it, and a fixed order would give the
    first function the same neighbour every round. The garbage of the previous run is
    collected before each timed call, so it is not charged to the next one.
    ``clock=time.process_time`` measures CPU time instead of wall time: on a shared machine
    with one torch thread it counts the work done, not the time spent waiting for a core.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    best = {k: float("inf") for k in fns}
    order = list(fns)
    for r in range(repeat):
        for k in (order if r % 2 == 0 else order[::-1]):
            gc.collect()
            t = clock()
            fns[k]()
            best[k] = min(best[k], clock() - t)
    return best


_PEAK_TEMPLATE = """
import json, resource, sys, time


def _status_mb(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024


{setup}
try:  # Linux: reset the peak-RSS mark (VmHWM), so an earlier transient peak cannot hide the call's
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    reset = True
    base = _status_mb("VmRSS")
except OSError:
    reset = False
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t, c = time.perf_counter(), time.process_time()
{call}
seconds, cpu_seconds = time.perf_counter() - t, time.process_time() - c
peak = _status_mb("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("@@RESULT@@" + json.dumps({{"peak_mb": peak - base, "base_mb": base, "seconds": seconds,
                                  "cpu_seconds": cpu_seconds, "reset": reset,
                                  "extra": globals().get("extra", {{}})}}))
"""


def peak_rss_run(setup: str, call: str, *, threads: int = 1, timeout: float = 1800,
                 env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``setup`` then ``call`` in a fresh Python; return the call's extra peak RSS.

    Returns ``{"peak_mb", "base_mb", "seconds", "cpu_seconds", "reset", "extra"}``:
    ``peak_mb`` is the rise of the process's maximum resident set during ``call`` (MiB),
    ``base_mb`` the resident size before it (interpreter, imports, inputs), ``seconds`` and
    ``cpu_seconds`` the call's wall and CPU time (this process only), ``reset`` whether the
    peak mark could be reset (if not, ``base_mb`` is the earlier peak and ``peak_mb`` a lower
    bound), ``extra`` whatever ``call`` left in a global ``extra``.
    """
    code = _PEAK_TEMPLATE.format(setup=setup, call=call)
    # threads=0: torch's default (every core), as in a user's process
    pinned = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)} if threads else {}
    full_env = {**os.environ, **pinned,
                "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
                **(env or {})}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=REPO_ROOT)
    for line in proc.stdout.splitlines():
        if line.startswith("@@RESULT@@"):
            return json.loads(line[len("@@RESULT@@"):])
    raise RuntimeError(
        f"benchmark subprocess failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
    )


def machine_info(opts: Options) -> dict[str, Any]:
    """What the numbers were measured on."""
    import numpy
    import scipy
    import torch
    import torch_geometric

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    mem_gb = None
    try:
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {
        "cpu": cpu,
        "cores": cores,
        "memory_gb": mem_gb,
        "gpu": gpu,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_geometric": torch_geometric.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "torch_threads": opts.threads,
    }


REFERENCE_WORKLOAD = ("a fixed CPU task, best of 3: 5M steps of a Python loop and 5,000 rounds "
                      "of small torch ops (64x64 matmul, ReLU, sum, division) on one thread")
"""What ``reference_s`` on the page times: the kind of work (interpreter and op dispatch)
that dominates gatrank's training and notebooks. Pages made on different days can be compared
by it: the same code ran ``gatrank suite --notebooks 03_overfit`` in 17 s and in 32 s on this
VM on two days."""


def reference_seconds(repeat: int = 3) -> float:
    """Wall time of :data:`REFERENCE_WORKLOAD` (best of ``repeat``): this machine's speed now."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        gen = torch.Generator().manual_seed(0)
        a = torch.randn(64, 64, generator=gen)

        def work() -> None:
            s = 0
            for i in range(5_000_000):
                s += i
            b = a
            for _ in range(5_000):
                b = torch.relu(b @ a) / (1.0 + b.sum().abs())

        return best_time(work, repeat=repeat, warmup=1)
    finally:
        torch.set_num_threads(threads)
