"""The chunked pairwise loss: same loss, gradients and pair count as the dense path."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from gatrank import losses
from gatrank.losses import (
    CHUNK_THRESHOLD,
    LN2,
    pairwise_rank_loss,
    pairwise_rank_loss_chunked,
)


def _inputs(n: int, seed: int, dtype=torch.float64, levels: int = 5):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(n, generator=g, dtype=dtype).requires_grad_()
    targets = torch.randint(0, levels, (n,), generator=g).to(dtype)  # ties on purpose
    group = torch.randint(0, 3, (n,), generator=g)
    return scores, targets, group


def _loss_and_grad(fn, scores, targets, **kw):
    out = fn(scores, targets, **kw)
    (grad,) = torch.autograd.grad(out.loss, scores)
    return out, grad


@pytest.mark.parametrize("block_rows", [1, 3, 7, 40])
@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"weight_by_diff": True},
        {"margin_eps": 0.5, "temperature": 0.3},
        {"weight_by_diff": True, "use_group": True, "temperature": 2.0},
        {"tie_eps": 1.5},
    ],
)
def test_chunked_equals_dense_loss_gradient_and_pairs(block_rows, kw):
    scores, targets, group = _inputs(23, seed=block_rows)
    kw = dict(kw)
    if kw.pop("use_group", False):
        kw["group"] = group
    dense, g_dense = _loss_and_grad(pairwise_rank_loss, scores, targets, **kw)
    chunk, g_chunk = _loss_and_grad(pairwise_rank_loss_chunked, scores, targets,
                                    block_rows=block_rows, **kw)
    assert chunk.num_pairs == dense.num_pairs > 0
    assert torch.allclose(chunk.loss, dense.loss, rtol=0, atol=1e-12)
    assert torch.allclose(g_chunk, g_dense, rtol=0, atol=1e-12)


def test_chunked_gradient_passes_gradcheck():
    scores, targets, group = _inputs(11, seed=3)

    def f(s):
        return pairwise_rank_loss_chunked(s, targets, weight_by_diff=True, group=group,
                                          temperature=0.7, block_rows=4).loss

    assert torch.autograd.gradcheck(f, (scores,))


def test_chunked_float32_agrees_with_dense_float64():
    scores, targets, _ = _inputs(300, seed=5, dtype=torch.float32, levels=50)
    s64 = scores.detach().double().requires_grad_()
    dense, g_dense = _loss_and_grad(pairwise_rank_loss, s64, targets.double(), weight_by_diff=True)
    chunk, g_chunk = _loss_and_grad(pairwise_rank_loss_chunked, scores, targets,
                                    weight_by_diff=True, block_rows=16)
    assert chunk.loss.dtype == torch.float32
    assert chunk.loss.item() == pytest.approx(dense.loss.item(), rel=1e-5)
    assert torch.allclose(g_chunk.double(), g_dense, rtol=1e-4, atol=1e-8)


def test_constant_model_gives_ln2_and_no_pairs_gives_zero_gradient():
    targets = torch.arange(10, dtype=torch.float32)
    out = pairwise_rank_loss_chunked(torch.zeros(10), targets, block_rows=3)
    assert out.loss.item() == pytest.approx(LN2, abs=1e-6)
    assert out.num_pairs == 45

    scores = torch.randn(6, requires_grad=True)
    none = pairwise_rank_loss_chunked(scores, torch.full((6,), 2.0), block_rows=2)
    assert none.num_pairs == 0 and none.loss.item() == 0.0
    assert none.loss.requires_grad
    none.loss.backward()
    assert torch.equal(scores.grad, torch.zeros(6))


def test_invariant_to_permutation_and_block_size():
    scores, targets, group = _inputs(50, seed=8)
    perm = torch.randperm(50, generator=torch.Generator().manual_seed(0))
    base = pairwise_rank_loss_chunked(scores, targets, group=group, block_rows=50).loss
    for rows in (1, 6, 49):
        permuted = pairwise_rank_loss_chunked(scores[perm], targets[perm], group=group[perm],
                                              block_rows=rows).loss
        assert torch.allclose(base, permuted, rtol=0, atol=1e-12)


def test_long_lists_dispatch_to_the_chunked_path(monkeypatch):
    scores, targets, group = _inputs(40, seed=9)
    dense, g_dense = _loss_and_grad(pairwise_rank_loss, scores, targets, group=group)
    assert "_ChunkedPairLoss" not in type(dense.loss.grad_fn).__name__
    monkeypatch.setattr(losses, "CHUNK_THRESHOLD", 16)
    chunk, g_chunk = _loss_and_grad(pairwise_rank_loss, scores, targets, group=group)
    assert "_ChunkedPairLoss" in type(chunk.loss.grad_fn).__name__
    assert chunk.num_pairs == dense.num_pairs
    assert torch.allclose(chunk.loss, dense.loss, atol=1e-12)
    assert torch.allclose(g_chunk, g_dense, atol=1e-12)


class _LargestTensor(TorchDispatchMode):
    """Records the largest tensor any op produces (forward and backward)."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_no_temporary_is_larger_than_one_block():
    n, rows = 600, 8
    scores, targets, group = _inputs(n, seed=4, dtype=torch.float32)
    with _LargestTensor() as dense_mode:
        pairwise_rank_loss(scores, targets, group=group).loss.backward()
    with _LargestTensor() as chunk_mode:
        pairwise_rank_loss_chunked(scores, targets, group=group, weight_by_diff=True,
                                   block_rows=rows).loss.backward()
    assert dense_mode.largest >= n * n // 4  # the dense path does build pair matrices
    assert chunk_mode.largest == rows * n


def test_default_threshold_keeps_runbook_batches_dense():
    assert CHUNK_THRESHOLD >= 64
    scores, targets, _ = _inputs(64, seed=1)
    out = pairwise_rank_loss(scores, targets)
    assert "_ChunkedPairLoss" not in type(out.loss.grad_fn).__name__


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"scores": torch.zeros(3), "targets": torch.zeros(4)}, "same length"),
        ({"scores": torch.zeros(3), "targets": torch.zeros(3), "temperature": -1.0}, "temperature"),
        ({"scores": torch.zeros(3), "targets": torch.zeros(3), "block_rows": 0}, "block_rows"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        pairwise_rank_loss_chunked(**kwargs)
