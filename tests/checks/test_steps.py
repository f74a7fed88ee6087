"""The per-step checks the notebooks show, on hand-built inputs: the same rules and labels as
the verdict, oracles for the counts."""

from __future__ import annotations

import pytest
import torch

from gatrank.checks import steps
from gatrank.checks.margins import margin_sentence
from gatrank.checks.static import check_loss
from gatrank.checks.verdict import THRESHOLDS, evaluate_verdict
from gatrank.config import Config
from gatrank.losses import LN2, make_loss_fn


def _rec(epoch, pa, sp, std, gn=0.5, loss=0.5):
    return {"epoch": epoch, "loss": loss, "pairwise_accuracy": pa, "spearman": sp,
            "score_std": std, "grad_norm": gn}


@pytest.mark.parametrize("pa, sp, std", [(0.55, 0.1, 0.005), (0.97, 0.95, 0.5)])
def test_evaluation_red_flags_are_the_verdicts(pa, sp, std):
    checks = steps.evaluation_checks({"pairwise_accuracy": pa, "spearman": sp, "score_std": std},
                                     {})
    verdict = {c.name: c.to_dict() for c in evaluate_verdict([_rec(1, pa, sp, std)]).checks}
    for c in checks:
        if c["kind"] == "red_flag":
            assert c == verdict[c["name"]]
    assert [c["name"] for c in checks] == ["score_std", "pairwise_accuracy_random",
                                           "spearman_none", "score_collapsed"]
    assert checks[0]["ok"] == (std > THRESHOLDS["score_std"])


def test_training_checks_use_the_runbooks_thresholds():
    hist = [_rec(1, 0.5, 0.1, 0.2, gn=THRESHOLDS["grad_norm"]),
            _rec(2, 0.8, 0.6, THRESHOLDS["score_std"], gn=THRESHOLDS["grad_norm"])]
    by_name = {c["name"]: c for c in steps.training_checks(hist, {"best_epoch": 2})}
    assert by_name["val_score_std"]["rule"] == "validation score std > 0.1 (best epoch)"
    assert not by_name["val_score_std"]["ok"] and not by_name["grad_norm"]["ok"]
    assert by_name["grad_norm"]["rule"] == "gradient norm > 0.01 (median)"
    assert by_name["val_pairwise_accuracy_improved"]["ok"]


def test_check_and_summary_agree_with_the_verdicts_check_type():
    ok = steps.check("a", "pass", "rule", 1, True)
    warn = steps.check("b", "warning", "rule", None, False, "why")
    assert "detail" not in ok and warn["detail"] == "why"
    assert steps.summarize_checks([ok, warn]) == (True, "PASS (with warnings)")
    with pytest.raises(ValueError, match="kind"):
        steps.check("c", "fatal", "rule", 0, False)


def test_duplicate_graphs_groups_what_wl_cannot_tell_apart(make_graphs):
    import pandas as pd

    graphs = make_graphs(4)
    graphs[2] = graphs[0].clone()  # same graph, another target
    graphs[3] = graphs[1].clone()
    graphs[3].edge_attr = torch.ones(graphs[3].edge_index.shape[1], 1)  # unseen by the GAT
    table = pd.DataFrame({"id": ["a", "b", "c", "d"], "y": [0.0, 1.0, 5.0, 1.0]})
    dups = steps.duplicate_graphs(graphs, table).sort_values("ids").reset_index(drop=True)
    assert dups[["size", "ids", "y"]].to_dict("records") == [
        {"size": 2, "ids": "a, c", "y": "0, 5"}, {"size": 2, "ids": "b, d", "y": "1, 1"}]
    assert dups["conflicting"].tolist() == [True, False]
    assert dups["y_range"].tolist() == [5.0, 0.0]


def _by_name(checks):
    return {c["name"]: c for c in checks}


def test_loss_tests_read_the_doctors_self_test():
    cfg = Config()
    tests = _by_name(steps.loss_tests(None, cfg))
    assert list(tests) == ["gradients_exist", "perfect_vs_reversed", "ties_ignored",
                           "no_valid_pairs", "large_gaps_finite", "temperature",
                           "constant_is_ln2"]
    assert all(c["ok"] for c in tests.values())
    res = check_loss(make_loss_fn(None, cfg), seed=cfg.training.seed)
    assert tests["gradients_exist"]["value"] == pytest.approx(res["grad_norm"])
    assert tests["perfect_vs_reversed"]["value"] == pytest.approx(
        res["loss_reversed"] - res["loss_perfect"])
    assert tests["large_gaps_finite"]["value"] == pytest.approx(res["loss_large_gaps"])
    assert tests["constant_is_ln2"]["value"] == pytest.approx(LN2)


def test_loss_tests_fail_where_the_doctor_does():
    for loss, failing in (("custom_plugins:reversed_margin_loss", "perfect_vs_reversed"),
                          ("custom_plugins:hinge_loss", None)):
        tests = _by_name(steps.loss_tests(loss, Config()))
        assert "temperature" not in tests and "constant_is_ln2" not in tests  # a user loss
        res = check_loss(make_loss_fn(loss, Config()))
        assert tests["perfect_vs_reversed"]["ok"] == res["prefers_correct_order"]
        assert tests["gradients_exist"]["ok"] == res["has_gradient"]
        if failing:
            assert not tests[failing]["ok"]


def test_a_raising_loss_is_a_failed_test_not_a_crash(monkeypatch):
    def broken(scores, targets):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr("custom_plugins.hinge_loss", broken)
    tests = steps.loss_tests("custom_plugins:hinge_loss", Config())
    assert tests and not any(c["ok"] for c in tests)
    assert all("RuntimeError: shape mismatch" in c["detail"] for c in tests)


def test_embedding_check_passes_fails_or_warns_when_unmeasured():
    assert steps.embedding_check([{"emb_graph_std": 0.5}])["ok"] is True
    assert steps.embedding_check([{"emb_graph_std": 0.001}])["kind"] == "pass"
    unmeasured = steps.embedding_check([_rec(1, 0.97, 0.95, 0.5)])  # a Monitor's record
    assert (unmeasured["kind"], unmeasured["ok"], unmeasured["value"]) == ("warning", False, None)
    assert "not measured" in unmeasured["detail"]


def _margin(diff: float, low: float, high: float) -> dict:
    return {"metric": "spearman", "difference": diff, "low": low, "high": high, "level": 0.95,
            "n": 50, "n_boot": 2000, "better": low > 0, "worse": high < 0}


def test_evaluation_checks_judge_each_fitted_baseline_by_its_bootstrap_interval():
    metrics = {"pairwise_accuracy": 0.8, "spearman": 0.7, "score_std": 1.0}
    base = {"constant": {"pairwise_accuracy": 0.5, "spearman": 0.0},
            "linear": {"pairwise_accuracy": 0.7, "spearman": 0.6},
            "fingerprint": {"pairwise_accuracy": 0.7, "spearman": 0.68}}
    margins = {"linear": _margin(0.1, 0.02, 0.2), "fingerprint": _margin(0.02, -0.05, 0.09)}
    checks = {c["name"]: c for c in steps.evaluation_checks(metrics, base, margins)}
    assert checks["beats_linear"]["ok"] and checks["beats_linear"]["value"] == 0.02
    assert checks["beats_linear"]["kind"] == "warning"
    # ahead on the point estimate, but not beyond the noise: warned, with the interval
    assert not checks["beats_fingerprint"]["ok"]
    assert "shows no difference from the fingerprint baseline beyond the noise (Spearman " \
           "+0.020, 95% interval -0.050 to +0.090, 50 graphs)" == checks["beats_fingerprint"][
               "detail"]
    # without margins: the old point comparison with the linear baseline
    plain = {c["name"]: c for c in steps.evaluation_checks(metrics, base)}
    assert plain["beats_linear"]["ok"] and "beats_fingerprint" not in plain


@pytest.mark.parametrize("low, high, start", [(0.01, 0.2, "beats the x baseline"),
                                              (-0.3, -0.1, "loses to the x baseline"),
                                              (-0.1, 0.1, "shows no difference from the x")])
def test_margin_sentence_says_which_side_of_the_noise_the_lead_is(low, high, start):
    assert margin_sentence("x", _margin((low + high) / 2, low, high)).startswith(start)
