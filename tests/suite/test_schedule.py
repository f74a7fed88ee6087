"""gatrank.suite.schedule: at most ``jobs`` at once, nothing before what it needs, the longest
chain first, a failure stops new starts and is raised; sizing to the machine."""

from __future__ import annotations

import threading
import time

import pytest

from gatrank.suite import schedule
from gatrank.suite.schedule import default_jobs, kernel_threads, run_concurrently


class Recorder:
    """run_one that sleeps per name, recording start/end times and the peak concurrency."""

    def __init__(self, sleeps: dict[str, float], fail: str = "") -> None:
        self.sleeps, self.fail = sleeps, fail
        self.lock = threading.Lock()
        self.now = self.peak = 0
        self.start: dict[str, float] = {}
        self.end: dict[str, float] = {}

    def __call__(self, name: str) -> str:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
            self.start[name] = time.perf_counter()
        time.sleep(self.sleeps.get(name, 0.05))
        with self.lock:
            self.now -= 1
            self.end[name] = time.perf_counter()
        if name == self.fail:
            raise RuntimeError(f"{name} broke")
        return name.upper()


def test_results_come_back_in_the_given_order_and_at_most_jobs_run_at_once():
    rec = Recorder({"a": 0.2, "b": 0.05, "c": 0.05, "d": 0.05})
    out = run_concurrently(["a", "b", "c", "d"], rec, jobs=2)
    assert list(out) == ["a", "b", "c", "d"] and out["c"] == "C"
    assert rec.peak == 2
    assert rec.start["b"] < rec.end["a"]  # ran beside the slow one


def test_a_notebook_starts_only_after_what_it_needs_and_the_holder_goes_first():
    rec = Recorder({"d": 0.2})
    starts: list[tuple[str, list[str]]] = []
    run_concurrently(["a", "b", "c", "d", "e"], rec, jobs=2, needs={"e": ["d"]},
                     on_start=lambda n, running: starts.append((n, running)))
    assert starts[0][0] == "d"  # e waits on it: the longest chain starts first
    assert rec.start["e"] >= rec.end["d"]
    assert all(n in running for n, running in starts)
    assert max(len(running) for _, running in starts) == 2


def test_needs_outside_the_selection_are_ignored_and_cycles_refused():
    rec = Recorder({})
    assert run_concurrently(["e"], rec, jobs=2, needs={"e": ["d"]}) == {"e": "E"}
    with pytest.raises(ValueError, match="cycle: a -> b -> a"):
        run_concurrently(["a", "b"], rec, jobs=2, needs={"a": ["b"], "b": ["a"]})


def test_a_failure_is_raised_after_the_running_ones_finish_and_nothing_new_starts():
    rec = Recorder({"a": 0.05, "b": 0.3}, fail="a")
    with pytest.raises(RuntimeError, match="a broke"):
        run_concurrently(["a", "b", "c"], rec, jobs=2)
    assert "b" in rec.end  # waited for, not abandoned
    assert "c" not in rec.start


def test_one_job_runs_one_after_another_in_order():
    rec = Recorder({})
    done: list[str] = []
    run_concurrently(["b", "a", "c"], rec, jobs=1, on_done=lambda n, r, running: done.append(n))
    assert done == ["b", "a", "c"] and rec.peak == 1


def test_jobs_default_to_the_cores_capped_by_memory_and_threads_share_the_cores(monkeypatch):
    monkeypatch.setattr(schedule, "cpu_count", lambda: 8)
    monkeypatch.setattr(schedule, "available_memory_gb", lambda: 64.0)
    assert default_jobs(5) == 5 and default_jobs(20) == 8
    monkeypatch.setattr(schedule, "available_memory_gb", lambda: 3.2)
    assert default_jobs(5) == int(3.2 // schedule.KERNEL_MEMORY_GB)
    monkeypatch.setattr(schedule, "available_memory_gb", lambda: 0.5)
    assert default_jobs(5) == 1
    monkeypatch.setattr(schedule, "available_memory_gb", lambda: None)
    assert default_jobs(5) == 5
    assert kernel_threads(1, None) is None  # one at a time: torch's own choice
    assert kernel_threads(2, None) == 4 and kernel_threads(3, None) == 2
    assert kernel_threads(16, None) == 1 and kernel_threads(2, 3) == 3
