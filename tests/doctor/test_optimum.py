"""The runbook's scale checks read against the loss's optimum: the optimum measured on perfect
orderings (oracles: ListNet's minimum at scores = targets + c, MSE's at the standardized
targets, the pairwise logistic loss falling without bound), and a run whose ranking passes
fitting only where the optimum explains its failing scale checks (each rule beside its healthy
twin)."""

from __future__ import annotations

import math

import pytest
import torch

from gatrank.checks.verdict import evaluate_verdict
from gatrank.config import Config
from gatrank.doctor.optimum import LossOptimum, loss_optimum, read_scale_checks
from gatrank.doctor.pyg_examples import listnet_loss, mse_loss
from gatrank.losses import make_loss_fn

Y = torch.tensor([0.010, 0.035, 0.020, 0.050, 0.002, 0.041, 0.027, 0.015])  # std ~0.016


def _fn(loss):
    return make_loss_fn(loss, Config())


def test_listnet_optimum_is_the_targets_themselves():
    opt = loss_optimum(_fn(listnet_loss), Y)
    assert opt.bounded
    assert opt.scale == pytest.approx(1.0)
    assert opt.score_std == pytest.approx(float(Y.std(unbiased=False)), rel=1e-6)
    # the oracle: the cross-entropy of softmax(y) with itself is its entropy
    p = torch.softmax(Y, 0)
    assert opt.loss_min == pytest.approx(float(-(p * p.log()).sum()), rel=1e-5)
    assert opt.loss_constant == pytest.approx(math.log(len(Y)), rel=1e-6)


def test_mse_on_standardized_targets_is_minimal_near_unit_spread():
    opt = loss_optimum(_fn(mse_loss), Y)
    assert opt.bounded
    # the grid steps by 10^0.25: the minimum lies within one step of score std 1 (ddof 1 in
    # the loss's standardization, ddof 0 here)
    assert 10 ** -0.25 < opt.score_std < 10 ** 0.25
    assert opt.loss_min < 0.1 * opt.loss_constant


def test_pairwise_logistic_loss_falls_without_bound():
    opt = loss_optimum(_fn(None), Y)
    assert not opt.bounded
    assert opt.loss_min < 1e-3 < opt.loss_constant


def test_a_loss_that_raises_or_constant_targets_give_no_optimum():
    def broken(scores, targets):
        raise RuntimeError("boom")

    assert loss_optimum(_fn(broken), Y) is None
    assert loss_optimum(_fn(None), torch.ones(8)) is None


def _history(pa, sp, std, grad, losses):
    return [{"epoch": 10 * k + 1, "loss": loss, "pairwise_accuracy": pa, "spearman": sp,
             "score_std": std, "grad_norm": grad} for k, loss in enumerate(losses)]


def _opt(bounded: bool, std: float = 0.018, loss_min: float = 0.0) -> LossOptimum:
    return LossOptimum(loss_constant=1.0, loss_min=loss_min, scale=1.0, score_std=std,
                       bounded=bounded, target_std=0.018)


def test_small_score_std_is_explained_only_when_the_loss_wants_that_spread():
    h = _history(1.0, 0.97, 0.018, 0.5, [1.0, 0.4, 0.2])
    verdict = evaluate_verdict(h)
    assert not verdict.passed  # the runbook's score std > 0.1 fails
    listwise = read_scale_checks(verdict, h, _opt(bounded=True))
    assert listwise.fits
    assert set(listwise.explained) == {"score_std"}
    assert "0.018" in listwise.note()
    # the healthy twin of the rule: a loss that wants ever larger scores explains nothing
    pairwise = read_scale_checks(verdict, h, _opt(bounded=False))
    assert not pairwise.fits and pairwise.unexplained == ["score_std"]
    # and without a measured optimum the runbook's verdict stands
    assert not read_scale_checks(verdict, h, None).fits


def test_small_gradients_are_explained_near_the_minimum_not_at_the_start():
    near = _history(1.0, 0.99, 11.0, 3e-5, [0.0136, 0.001, 1e-6])
    far = _history(1.0, 0.99, 11.0, 3e-5, [0.6931, 0.6929, 0.6925])
    for h, fits in ((near, True), (far, False)):
        reading = read_scale_checks(evaluate_verdict(h), h, _opt(bounded=False))
        assert reading.fits is fits, reading
    assert "grad_norm" in read_scale_checks(evaluate_verdict(near), near,
                                            _opt(bounded=False)).explained


def test_a_flat_loss_is_explained_by_a_small_room_to_fall():
    # ListNet on close targets: the loss can only fall from 3.4657 to 3.4655
    h = _history(1.0, 0.97, 0.02, 0.5, [3.4657, 3.4656, 3.46552])
    opt = _opt(bounded=True, std=0.02, loss_min=3.4655)
    reading = read_scale_checks(evaluate_verdict(h), h, opt)
    assert reading.fits and {"loss_decreasing", "loss_flat"} <= set(reading.explained)
    assert reading.note().count("the loss fell") == 1  # the check and its red flag: once
    # the same flat loss where a perfect ordering could reach 0 is not explained
    assert not read_scale_checks(evaluate_verdict(h), h, _opt(bounded=True, std=0.02)).fits


def test_a_failing_ranking_is_never_re_read():
    h = _history(0.7, 0.5, 0.018, 0.5, [1.0, 0.9, 0.8])
    reading = read_scale_checks(evaluate_verdict(h), h, _opt(bounded=True))
    assert not reading.fits and not reading.explained
