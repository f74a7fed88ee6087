"""The runbook's pass criteria and red flags on synthetic histories."""

from __future__ import annotations

import pytest

from gatrank.checks.verdict import (
    THRESHOLDS,
    Check,
    evaluate_verdict,
    format_verdict,
    runbook_check,
    stop_at_verdict,
    summarize_checks,
)


def _rec(epoch, loss, pa, sp, std, gn):
    return {"epoch": epoch, "loss": loss, "pairwise_accuracy": pa, "spearman": sp,
            "score_std": std, "grad_norm": gn}


def _healthy():
    return [
        _rec(1, 0.69, 0.6, 0.3, 0.05, 0.5),
        _rec(10, 0.40, 0.85, 0.7, 0.5, 1.0),
        _rec(20, 0.10, 0.96, 0.93, 1.0, 0.8),
        _rec(30, 0.01, 0.99, 0.97, 2.0, 1e-4),  # solved: tiny gradients are fine now
        _rec(40, 0.005, 0.99, 0.97, 2.0, 1e-5),
        _rec(50, 0.004, 0.99, 0.97, 2.0, 1e-5),
    ]


def test_healthy_run_passes_with_no_red_flags():
    v = evaluate_verdict(_healthy())
    assert v.passed and v.label == "PASS"
    assert v.red_flags == []
    assert v.epochs_to_pass == 20
    assert v.epochs_to_ideal == 20


def test_collapsed_run_fails_with_every_red_flag():
    hist = [_rec(e, 0.6931, 0.5, 0.0, 1e-5, 0.0) for e in (1, 10, 20)]
    v = evaluate_verdict(hist)
    assert not v.passed
    assert {c.name for c in v.red_flags} == {
        "pairwise_accuracy_random", "spearman_none", "score_collapsed", "no_gradients",
        "loss_flat",
    }
    assert v.epochs_to_pass is None
    text = format_verdict(v)
    assert "FAIL" in text and "FLAG" in text


@pytest.mark.parametrize(
    "field, value, failing",
    [
        ("pairwise_accuracy", 0.89, "pairwise_accuracy"),
        ("spearman", 0.79, "spearman"),
        ("score_std", 0.09, "score_std"),
    ],
)
def test_each_pass_criterion_is_a_strict_threshold(field, value, failing):
    hist = _healthy()
    hist[-1] = dict(hist[-1], **{field: value})
    v = evaluate_verdict(hist)
    assert not v.passed
    assert [c.name for c in v.checks if c.kind == "pass" and not c.ok] == [failing]


def test_flat_loss_is_flagged():
    hist = _healthy()
    for h in hist:
        h["loss"] = 0.5
    v = evaluate_verdict(hist)
    assert "loss_flat" in {c.name for c in v.red_flags}


def test_validation_prefix():
    hist = [dict(h, val_pairwise_accuracy=0.5, val_spearman=0.0, val_score_std=0.0)
            for h in _healthy()]
    assert evaluate_verdict(hist).passed
    assert not evaluate_verdict(hist, prefix="val_").passed


def test_thresholds_are_the_runbooks():
    assert THRESHOLDS["pairwise_accuracy"] == 0.9
    assert THRESHOLDS["spearman"] == 0.8
    assert THRESHOLDS["score_std"] == 0.1
    assert THRESHOLDS["grad_norm"] == 0.01
    assert THRESHOLDS["flag_score_std"] == 0.01


def test_empty_history_is_an_error():
    with pytest.raises(ValueError, match="empty history"):
        evaluate_verdict([])


def test_check_records_detail_only_when_set():
    plain = Check("a", "pass", "rule", 1, 1)
    assert plain.to_dict() == {"name": "a", "kind": "pass", "rule": "rule", "value": 1.0,
                               "ok": True}
    assert dict(vars(plain)) == plain.to_dict() and plain.detail == ""
    noted = Check("b", "warning", "rule", None, False, "why")
    assert noted.to_dict()["detail"] == "why" and noted.value is None
    assert Check("a", "pass", "rule", 1.0, True) == plain
    with pytest.raises(ValueError, match="'pass', 'red_flag' or 'warning'"):
        Check("c", "fail", "rule", 0.0, False)


@pytest.mark.parametrize("kinds_ok, expected", [
    ([("pass", True)], (True, "PASS")),
    ([("pass", True), ("warning", False)], (True, "PASS (with warnings)")),
    ([("pass", True), ("red_flag", False)], (True, "PASS (with warnings)")),
    ([("pass", False), ("warning", False)], (False, "FAIL")),
    ([("pass", False), ("red_flag", False)], (False, "FAIL (red flags)")),
])
def test_summarize_checks_on_objects_and_dicts(kinds_ok, expected):
    checks = [Check(f"c{i}", kind, "rule", 0.0, ok) for i, (kind, ok) in enumerate(kinds_ok)]
    assert summarize_checks(checks) == expected
    assert summarize_checks([c.to_dict() for c in checks]) == expected


def test_verdict_label_is_the_checks_summary():
    for hist in (_healthy(), [_rec(e, 0.6931, 0.5, 0.0, 1e-5, 0.0) for e in (1, 10)]):
        v = evaluate_verdict(hist)
        assert (v.passed, v.label) == summarize_checks(v.checks)


def test_runbook_check_wording_and_strictness():
    t = THRESHOLDS
    c = runbook_check("score_std", t["score_std"], name="val_score_std", scope="validation",
                      note="best epoch")
    assert (c.name, c.kind, c.ok) == ("val_score_std", "pass", False)  # strictly above
    assert c.rule == f"validation score std > {t['score_std']} (best epoch)"
    flag = runbook_check("score_collapsed", t["flag_score_std"])
    assert flag.kind == "red_flag" and flag.ok  # at the threshold: not collapsed
    with pytest.raises(ValueError, match="unknown runbook rule"):
        runbook_check("accuracy", 1.0)


def test_stop_at_verdict_stops_at_the_first_record_where_every_criterion_holds():
    h = _healthy()
    reasons = [stop_at_verdict(h[:i]) for i in range(1, len(h) + 1)]
    assert reasons[:2] == [None, None]
    assert reasons[2] is not None and "at epoch 20" in reasons[2]
    assert stop_at_verdict([_rec(1, 0.1, 0.99, 0.99, 2.0, 1.0)]) is None  # no loss drop yet
    collapsed = [_rec(1, 0.69, 0.5, 0.0, 0.001, 1e-6), _rec(10, 0.69, 0.5, 0.0, 0.001, 1e-6)]
    assert stop_at_verdict(collapsed) is None
