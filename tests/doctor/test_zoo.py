"""The proof: the doctor names the cause of every fault of the zoo (and, where the fault says
what it put where, its evidence names it); the zoo's result rule and the page it writes. Its
healthy twin, set-ups that must raise no cause on any seed, is tests/doctor/test_healthy.py.

The zoo tests are marked slow (each trains for a few seconds on 128 graphs of the
embedded data); they are parametrized one run per test so pytest-xdist spreads them.
"""

from __future__ import annotations

import pytest

from gatrank.doctor import diagnose
from gatrank.doctor.faults import FAULTS
from gatrank.doctor.zoo import ZooResult, write_zoo_page, zoo_graphs

HUMAN_FIXES = {"constant_targets", "loss_detached", "loss_wrong_direction",
               "score_shape_mismatch", "user_code_error", "no_signal"}
"""Causes whose fix only the user can make (their targets, their loss's or model's code): the
doctor says so and never calls them verified. Every other fault's cause is verified."""


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FAULTS))
def test_doctor_names_the_cause_of_every_fault(zoo_set, name, check_report):
    fault = FAULTS[name]
    # a cause judged on held-out graphs needs a sample large enough to judge
    graphs = zoo_graphs(fault.graphs) if fault.graphs > len(zoo_set) else zoo_set
    report = diagnose(graphs, inject=name)
    result = ZooResult(name, fault.cause, report.cause_ids, report.verdict, report.seconds,
                       fault.also)
    assert result.ok, report.format_text()
    assert report.verdict != "healthy"
    by_id = {c.id: c for c in report.causes}
    if fault.evidence:
        cause = by_id.get(fault.cause, report.causes[0])
        missing = [s for s in fault.evidence if s not in cause.evidence]
        assert not missing, f"{cause.id} evidence lacks {missing}: {cause.evidence}"
    check_report(report)
    # the fix of the fault's cause: verified by a run that passes where the unfixed one did
    # not, or said to need the user
    cause = by_id[fault.cause]
    rec = cause.verification
    if fault.cause in HUMAN_FIXES:
        assert rec["status"] == "human", (rec, report.format_text())
        assert cause.fix.startswith("Needs you, not verified: ")
        assert not cause.verified
        return
    assert rec["status"] == "verified", report.format_text()
    assert rec["passed"] and rec["fix"]["label"] and rec["fix"]["kind"] in (
        "config", "data", "model")
    unfixed = {s.name: s.status for s in report.stages}
    if rec["fix"]["base"] == "overfit":
        assert rec["epoch"] and rec["epoch"] <= 500  # the runbook's budget
        assert rec["pairwise_accuracy"] > 0.9 and rec["spearman"] > 0.8
        assert unfixed.get("overfit", "failed") == "failed" or unfixed["data"] == "failed"
    else:  # the user's settings failed on the overfit graphs, and learn with the fix
        assert unfixed["your_settings"] == "failed"
    assert cause.fix.startswith("Verified: with ")
    assert report.causes[0].verified or report.causes[0].score >= 1.0


def test_zoo_result_accepts_an_overlapping_cause_only_second_behind_an_allowed_one():
    ok = ZooResult("f", "dead_activations", ["dead_activations"], "collapsed", 0.0)
    assert ok.ok
    second = ZooResult("f", "oversmoothing", ["vanishing_gradients", "oversmoothing"], "x", 0.0,
                       also=("vanishing_gradients",))
    assert second.ok
    wrong = ZooResult("f", "oversmoothing", ["frozen_parameters", "oversmoothing"], "x", 0.0,
                      also=("vanishing_gradients",))
    assert not wrong.ok
    assert ZooResult("healthy (seed 0)", None, [], "healthy", 0.0).ok
    assert not ZooResult("healthy (seed 0)", None, ["no_signal"], "no_generalization", 0.0).ok


def test_zoo_page_keeps_the_text_around_the_table(tmp_path):
    page = tmp_path / "doctor.md"
    page.write_text("# Doctor\n\nintro\n\n<!-- zoo-table:start -->\nold\n<!-- zoo-table:end -->\n"
                    "\noutro\n")
    results = [ZooResult("constant_targets", "constant_targets", ["constant_targets"],
                         "bad_data", 0.1),
               ZooResult("healthy (seed 0)", None, [], "healthy", 2.0)]
    write_zoo_page(page, results, command="gatrank doctor --zoo-table doctor.md")
    text = page.read_text()
    assert text.startswith("# Doctor\n\nintro") and text.rstrip().endswith("outro")
    assert "old" not in text and "| constant_targets | data |" in text
    assert "2 of 2 runs right" in text
    write_zoo_page(page, results)  # idempotent: one table, not two
    assert page.read_text().count("<!-- zoo-table:start -->") == 1
