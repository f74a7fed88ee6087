"""The runbook's pass criteria and red flags on synthetic histories: the overfit test's thresholds,
and a training run's (Step 3, "Monitor training"), with the healthy twin that shows the switch
matters."""

from __future__ import annotations

import pytest

from gatrank.checks.verdict import (
    OVERFIT_MAX_GRAPHS,
    OVERFIT_TEST,
    THRESHOLDS,
    TRAINING,
    Check,
    evaluate_run,
    evaluate_training,
    evaluate_verdict,
    format_verdict,
    judgement,
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


# --------------------------------------------------------------------------- a training run


def _training_run(val: bool = True, val_spearman: float = 0.8):
    """A healthy run over 200 graphs with dropout: training pairwise accuracy rises to 0.8 (the
    overfit test's 0.9 is out of reach), validation Spearman to ``val_spearman``."""
    rows = [(1, 0.66, 0.60, 0.25, 0.3, 0.4), (10, 0.55, 0.72, 0.60, 0.6, 0.3),
            (20, 0.50, 0.80, 0.70, 0.8, 0.25)]
    vals = [(0.60, 0.3 * val_spearman, 0.35), (0.74, 0.8 * val_spearman, 0.6),
            (0.80, val_spearman, 0.8)]
    return [dict(_rec(*r), **({"val_pairwise_accuracy": pa, "val_spearman": sp,
                               "val_score_std": std} if val else {}))
            for r, (pa, sp, std) in zip(rows, vals, strict=True)]


def _collapsed_training_run():
    return [_rec(e, 0.6931, 0.5, 0.01, 1e-5, 1e-6) for e in (1, 10, 20)]


def test_the_graphs_per_epoch_decide_whose_thresholds_apply():
    assert judgement(None) == judgement(32) == judgement(OVERFIT_MAX_GRAPHS) == OVERFIT_TEST
    assert judgement(OVERFIT_MAX_GRAPHS + 1) == judgement(813) == TRAINING
    assert OVERFIT_MAX_GRAPHS >= 32  # the runbook's --overfit-n 32 is an overfit test


@pytest.mark.parametrize("val", [True, False])
def test_a_healthy_training_run_passes_step_3_and_would_fail_the_overfit_test(val):
    hist = _training_run(val=val)
    overfit = evaluate_verdict(hist)  # the healthy twin: the same records, the wrong thresholds
    assert not overfit.passed and overfit.judged_as == OVERFIT_TEST
    assert "pairwise_accuracy" in {c.name for c in overfit.checks if not c.ok}
    v = evaluate_training(hist, graphs_per_epoch=200)
    assert v.passed and v.label == "PASS" and v.red_flags == []
    assert (v.judged_as, v.graphs_per_epoch, v.validated) == (TRAINING, 200, val)
    assert evaluate_run(hist, graphs_per_epoch=200).to_dict() == v.to_dict()
    assert evaluate_run(hist, graphs_per_epoch=32).to_dict() == overfit.to_dict()
    names = [c.name for c in v.checks if c.kind == "pass"]
    assert names == (["val_score_std", "val_pairwise_accuracy_improved", "grad_norm",
                      "val_spearman"] if val else
                     ["score_std", "pairwise_accuracy_improved", "grad_norm"])


def test_a_collapsed_training_run_fails_with_the_runbooks_red_flags():
    v = evaluate_training(_collapsed_training_run(), graphs_per_epoch=200)
    assert not v.passed and v.label == "FAIL (red flags)"
    assert {c.name for c in v.red_flags} == {
        "pairwise_accuracy_random", "spearman_none", "score_collapsed", "no_gradients",
        "loss_flat"}
    assert {c.name for c in v.checks if c.kind == "pass" and not c.ok} == {
        "score_std", "pairwise_accuracy_improved", "grad_norm"}


def test_a_training_run_at_chance_on_validation_fails_while_its_training_side_passes():
    hist = _training_run(val_spearman=0.1)
    v = evaluate_training(hist, graphs_per_epoch=200)
    assert not v.passed
    assert [c.name for c in v.checks if c.kind == "pass" and not c.ok] == ["val_spearman"]
    assert {c.name for c in v.red_flags} == {"val_spearman_none"}
    assert evaluate_training(hist, graphs_per_epoch=200, validation=False).passed


def test_training_reads_validation_at_the_best_epoch_and_flags_at_the_last():
    hist = _training_run()
    hist.append(dict(hist[-1], epoch=30, val_spearman=0.15, val_score_std=0.005))
    v = {c.name: c for c in evaluate_training(hist, graphs_per_epoch=200).checks}
    assert v["val_spearman"].value == 0.8 and v["val_spearman"].ok  # best epoch: 20
    assert v["val_score_std"].value == 0.8
    assert not v["val_spearman_none"].ok and not v["val_score_collapsed"].ok  # epoch 30
    assert v["val_spearman"].rule == "validation Spearman > 0.2, above chance (best epoch)"


def test_step_3s_checks_are_04_full_trains():
    """One home per rule: the pass criteria a training run shares with Step 3's checks of a
    full-training history are the same checks (04_full_train's), at the same best epoch."""
    from gatrank.checks.steps import training_checks

    hist = _training_run()
    shared = [c.to_dict() for c in evaluate_training(hist).checks[:3]]
    assert shared == training_checks(hist, {"best_epoch": 20})


def test_the_verdict_names_the_thresholds_it_applied():
    overfit = evaluate_verdict(_healthy())
    assert overfit.to_dict()["judged_as"] == "overfit test"
    assert overfit.to_dict()["graphs_per_epoch"] is None
    assert format_verdict(overfit).splitlines()[-1] == f"  {overfit.thresholds}"
    assert overfit.thresholds.startswith("judged as an overfit test: the runbook's expected")
    trained = evaluate_training(_training_run(), graphs_per_epoch=813)
    assert trained.to_dict()["judged_as"] == "training"
    assert trained.to_dict()["thresholds"] == trained.thresholds == (
        f"judged as training (813 graphs per epoch; an overfit test has at most "
        f"{OVERFIT_MAX_GRAPHS}): the runbook's Step 3 checks and red flags, on the validation "
        "metrics")
    assert format_verdict(trained).splitlines()[-1] == f"  {trained.thresholds}"
    no_val = evaluate_training(_training_run(val=False), graphs_per_epoch=813)
    assert no_val.thresholds.endswith("on the training metrics (the run reported no validation "
                                      "metrics)")


def test_the_table_keeps_the_overfit_tests_layout_and_widens_for_longer_rules():
    rows = format_verdict(evaluate_verdict(_healthy())).splitlines()
    assert rows[1] == f"  [ok ] {'pairwise accuracy > 0.9':<45} measured 0.99"
    trained = format_verdict(evaluate_training(_training_run())).splitlines()
    columns = {line.index(" measured ") for line in trained if "[ok ]" in line or "[-- ]" in line}
    assert len(columns) == 1  # aligned, however long the rule
