"""The loop zoo (gatrank.loops.zoo): every loop bug of a public report, written as users
write their loops with a gatrank.Monitor in them, gets its cause among the doctor's first two
with the evidence that names it, on seeds 0 and 1; its healthy twins (the README's loop, SGD,
per-epoch and per-batch schedulers used as meant, gradient accumulation done right, no
shuffling, [G, 1] scores) get no cause, and a loop stopped while it still learns says so.

The runs are marked slow (each trains 32 graphs for 80 to 240 epochs, a few seconds on one
thread); one run per test so pytest-xdist spreads them.
"""

from __future__ import annotations

import inspect
import json

import pytest

from gatrank.loops.table import LoopResult, loop_graphs, loop_markdown, run_loop
from gatrank.loops.zoo import HEALTHY_LOOPS, LOOP_FAULTS, LoopCase

pytestmark = pytest.mark.usefixtures("one_thread")

SEEDS = [0, 1]


@pytest.fixture(scope="module")
def graphs():
    return loop_graphs()


def test_each_fault_loop_carries_its_bug_and_each_healthy_loop_none():
    names = [c.name for c in LOOP_FAULTS + HEALTHY_LOOPS]
    assert len(names) == len(set(names))
    for case in LOOP_FAULTS:
        assert case.expect and case.source
        assert "# BUG" in inspect.getsource(case.loop), case.name
    for case in HEALTHY_LOOPS:
        assert case.expect is None and case.status
        assert "BUG" not in inspect.getsource(case.loop), case.name


def test_a_healthy_loop_with_evidence_words_is_refused():
    with pytest.raises(ValueError, match="healthy loop"):
        LoopCase("x", "-", None, HEALTHY_LOOPS[0].loop, words=("same",))
    with pytest.raises(ValueError, match="no cause id"):
        LoopCase("x", "-", "no_such_cause", HEALTHY_LOOPS[0].loop)


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("case", LOOP_FAULTS, ids=lambda c: c.name)
def test_the_doctor_names_the_loop_bug(case, seed, graphs, check_report):
    _, report = run_loop(case, seed, graphs=graphs)
    assert case.expect in report.cause_ids[:2], report.format_text()
    cause = next(c for c in report.causes if c.id == case.expect)
    missing = [w for w in case.words if w not in cause.evidence]
    assert not missing, f"{cause.id} evidence lacks {missing}: {cause.evidence}"
    check_report(report)


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("case", HEALTHY_LOOPS, ids=lambda c: c.name)
def test_a_healthy_loop_gets_no_cause(case, seed, graphs, check_report, tmp_path):
    monitor, report = run_loop(case, seed, tmp_path, graphs=graphs)
    assert report.causes == [], report.format_text()
    assert report.verdict in case.status, report.format_text()
    check_report(report)
    # the records the Monitor kept are the ones it wrote for `gatrank verdict`
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [r["epoch"] for r in monitor.history]
    verdict = monitor.verdict()
    if "still_learning" in case.status:  # the runbook's verdict says so too, with the trend
        assert not verdict.passed and verdict.trend["to"] > verdict.trend["from"]
        assert "still learning: pairwise accuracy" in str(verdict)
        assert report.notes[0] == verdict.still_learning
    else:
        assert verdict.passed and verdict.trend is None


def test_the_table_counts_a_fault_right_only_with_its_words_among_the_first_two():
    fault, healthy = LOOP_FAULTS[0], HEALTHY_LOOPS[0]
    words = " ".join(fault.words)
    results = [
        LoopResult(fault, 0, "broken_loop", ["x", fault.expect], words, False, 1.0),
        LoopResult(fault, 1, "broken_loop", ["x", "y", fault.expect], words, False, 1.0),
        LoopResult(fault, 2, "broken_loop", [fault.expect], "", False, 1.0),
        LoopResult(healthy, 0, "healthy", [], "", True, 1.0),
        LoopResult(healthy, 1, "cannot_fit", [], "", False, 1.0),
    ]
    assert [r.ok for r in results] == [True, False, False, True, False]
    table = loop_markdown(results)
    assert f"| `{fault.name}` | {fault.source} | `{fault.expect}` | 0, 1, 2 |" in table
    assert "| 1/3 |" in table and "| 1/2 |" in table
    assert f"- `{fault.name}` ({fault.expect}): {words}" in table
    assert table.endswith("2 of 5 runs right; 5 s in all (one thread).")
