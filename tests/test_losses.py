"""The runbook's loss tests (Step 2A), plus an independent oracle and invariances."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from gatrank.losses import LN2, PairwiseRankLoss, pairwise_rank_loss, valid_pair_mask


def _oracle(scores, targets, *, margin_eps=0.0, tie_eps=1e-6, temperature=1.0,
            weight_by_diff=False, group=None):
    """BCEWithLogits on explicitly listed pairs: label 1 for 'i above j'."""
    logits, weights = [], []
    n = len(targets)
    for i, j in itertools.product(range(n), range(n)):
        dy = float(targets[i] - targets[j])
        if dy > margin_eps and abs(dy) > tie_eps and (group is None or group[i] == group[j]):
            logits.append((scores[i] - scores[j]) / temperature)
            weights.append(abs(dy) if weight_by_diff else 1.0)
    if not logits:
        return None
    logits = torch.stack(logits)
    w = torch.tensor(weights, dtype=logits.dtype)
    per = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, torch.ones_like(logits), reduction="none"
    )
    return (per * w).sum() / w.sum()


def test_gradients_exist():
    scores = torch.randn(8, requires_grad=True)
    targets = torch.arange(8, dtype=torch.float32)
    out = pairwise_rank_loss(scores, targets)
    assert out.loss.requires_grad
    out.loss.backward()
    assert scores.grad is not None
    assert scores.grad.abs().sum() > 0
    assert torch.isfinite(scores.grad).all()


def test_perfect_vs_reversed_ordering():
    targets = torch.arange(10, dtype=torch.float32)
    perfect = pairwise_rank_loss(targets.clone(), targets).loss
    reversed_ = pairwise_rank_loss(-targets, targets).loss
    constant = pairwise_rank_loss(torch.zeros(10), targets).loss
    assert perfect < constant < reversed_
    assert constant == pytest.approx(LN2, abs=1e-6)


@pytest.mark.parametrize("weight_by_diff", [False, True])
@pytest.mark.parametrize("temperature", [0.5, 1.0, 3.0])
@pytest.mark.parametrize("margin_eps", [0.0, 0.3])
def test_matches_bce_oracle_on_listed_pairs(weight_by_diff, temperature, margin_eps):
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(9, generator=g, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 4, (9,), generator=g).double()  # ties on purpose
    got = pairwise_rank_loss(scores, targets, margin_eps=margin_eps, temperature=temperature,
                             weight_by_diff=weight_by_diff)
    want = _oracle(scores, targets, margin_eps=margin_eps, temperature=temperature,
                   weight_by_diff=weight_by_diff)
    assert torch.allclose(got.loss, want, atol=1e-12)
    (g1,) = torch.autograd.grad(got.loss, scores)
    (g2,) = torch.autograd.grad(want, scores)
    assert torch.allclose(g1, g2, atol=1e-12)


def test_num_pairs_counts_valid_ordered_pairs():
    targets = torch.tensor([0.0, 1.0, 1.0, 2.0])
    # ordered pairs with y_i > y_j: (1,0),(2,0),(3,0),(3,1),(3,2) -> 5; (1,2) is a tie
    assert pairwise_rank_loss(torch.zeros(4), targets).num_pairs == 5


def test_ties_are_ignored():
    scores = torch.tensor([0.0, 5.0, -3.0])
    targets = torch.tensor([1.0, 1.0, 1.0 + 5e-7])  # all within tie_eps=1e-6
    out = pairwise_rank_loss(scores, targets, tie_eps=1e-6)
    assert out.num_pairs == 0
    # The same gaps count once tie_eps is smaller than them.
    assert pairwise_rank_loss(scores, targets, tie_eps=1e-7).num_pairs == 2


def test_no_valid_pairs_gives_zero_loss_with_zero_gradients():
    scores = torch.randn(5, requires_grad=True)
    out = pairwise_rank_loss(scores, torch.full((5,), 3.0))
    assert out.num_pairs == 0
    assert out.loss.item() == 0.0
    assert out.loss.requires_grad
    out.loss.backward()
    assert torch.equal(scores.grad, torch.zeros(5))


def test_temperature_scales_score_gaps():
    scores = torch.tensor([0.3, -1.2, 2.0, 0.7])
    targets = torch.tensor([1.0, 0.0, 3.0, 2.0])
    a = pairwise_rank_loss(scores, targets, temperature=2.0).loss
    b = pairwise_rank_loss(scores / 2.0, targets, temperature=1.0).loss
    assert torch.allclose(a, b)
    # Higher temperature pulls a correct ordering's loss up towards ln 2.
    hot = pairwise_rank_loss(targets, targets, temperature=100.0).loss
    cold = pairwise_rank_loss(targets, targets, temperature=0.1).loss
    assert cold < hot < LN2


def test_weighting_by_diff_emphasises_large_gaps():
    targets = torch.tensor([0.0, 0.1, 10.0])
    # Get the small-gap pair wrong and the big-gap pairs right.
    scores = torch.tensor([1.0, 0.0, 5.0])
    plain = pairwise_rank_loss(scores, targets, weight_by_diff=False).loss
    weighted = pairwise_rank_loss(scores, targets, weight_by_diff=True).loss
    assert weighted < plain


def test_groups_restrict_pairs_and_equal_separate_lists():
    g = torch.Generator().manual_seed(1)
    s1, s2 = torch.randn(4, generator=g), torch.randn(5, generator=g)
    y1, y2 = torch.randn(4, generator=g), torch.randn(5, generator=g)
    group = torch.tensor([0] * 4 + [1] * 5)
    joint = pairwise_rank_loss(torch.cat([s1, s2]), torch.cat([y1, y2]), group=group)
    a, b = pairwise_rank_loss(s1, y1), pairwise_rank_loss(s2, y2)
    assert joint.num_pairs == a.num_pairs + b.num_pairs
    expected = (a.loss * a.num_pairs + b.loss * b.num_pairs) / (a.num_pairs + b.num_pairs)
    assert torch.allclose(joint.loss, expected)


def test_groups_of_one_have_no_pairs():
    out = pairwise_rank_loss(torch.randn(3), torch.tensor([0.0, 1.0, 2.0]),
                             group=torch.tensor([0, 1, 2]))
    assert out.num_pairs == 0


def test_invariant_to_permutation_and_score_shift():
    g = torch.Generator().manual_seed(2)
    scores, targets = torch.randn(12, generator=g), torch.randn(12, generator=g)
    perm = torch.randperm(12, generator=g)
    base = pairwise_rank_loss(scores, targets, weight_by_diff=True).loss
    assert torch.allclose(base, pairwise_rank_loss(scores[perm], targets[perm],
                                                   weight_by_diff=True).loss)
    assert torch.allclose(base, pairwise_rank_loss(scores + 7.5, targets,
                                                   weight_by_diff=True).loss)


def test_finite_for_huge_score_gaps():
    scores = torch.tensor([1e4, -1e4, 0.0], requires_grad=True)
    targets = torch.tensor([0.0, 1.0, 2.0])  # badly wrong by 1e4
    out = pairwise_rank_loss(scores, targets)
    out.loss.backward()
    assert math.isfinite(out.loss.item())
    assert out.loss.item() > 1e3
    assert torch.isfinite(scores.grad).all()


def test_half_precision_scores_are_computed_in_float32():
    scores = torch.tensor([0.5, 0.25, 0.0], dtype=torch.float16)
    targets = torch.tensor([2.0, 1.0, 0.0])
    out = pairwise_rank_loss(scores, targets)
    assert out.loss.dtype == torch.float32


def test_module_form_records_pair_count():
    loss = PairwiseRankLoss(weight_by_diff=True)
    value = loss(torch.zeros(3), torch.tensor([0.0, 1.0, 2.0]))
    assert value.item() == pytest.approx(LN2)
    assert loss.last_num_pairs == 3


def test_valid_pair_mask_is_antisymmetric():
    targets = torch.tensor([0.0, 1.0, 1.0, 3.0])
    m = valid_pair_mask(targets)
    assert not (m & m.T).any()
    assert not m.diagonal().any()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"scores": torch.zeros(3), "targets": torch.zeros(4)}, "same length"),
        ({"scores": torch.zeros(3, 2), "targets": torch.zeros(3)}, r"\[B\] or \[B, 1\]"),
        ({"scores": torch.zeros(3), "targets": torch.zeros(3), "temperature": 0.0}, "temperature"),
        ({"scores": torch.zeros(3), "targets": torch.zeros(3), "group": torch.zeros(2)}, "group"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        pairwise_rank_loss(**kwargs)
