"""Pairwise loss: forward + backward time and peak memory by list size, against allRank's way.

Targets: at least 40x faster than the allRank-style reference at 1,024 items; at most 400 MB
extra peak memory at 4,096; the chunked path at 16,384 items under 2 GB.
"""

from __future__ import annotations

import logging

import torch

from benchmarks.common import Check, Options, Section, best_time, peak_rss_run
from benchmarks.references import allrank_style_loss, double_loop_loss
from gatrank.losses import CHUNK_THRESHOLD, pairwise_rank_loss

__all__ = ["run", "LOSS_KWARGS"]

logger = logging.getLogger(__name__)

LOSS_KWARGS = {"margin_eps": 0.0, "tie_eps": 1e-6, "temperature": 1.0, "weight_by_diff": True}
"""The runbook's recommended loss settings."""

SPEEDUP_TARGET = 40.0
MEMORY_TARGET_MB = 400.0
CHUNKED_SIZE = 16_384
CHUNKED_TARGET_MB = 2048.0
AGREEMENT_TOL = 1e-9


def _inputs(n: int, dtype: torch.dtype = torch.float32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(n, generator=g, dtype=dtype)
    targets = torch.round(torch.randn(n, generator=g, dtype=dtype) * 100) / 100  # some ties
    return scores, targets


def _gatrank(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return pairwise_rank_loss(scores, targets, **LOSS_KWARGS).loss


def _fwd_bwd(fn, scores: torch.Tensor, targets: torch.Tensor):
    def step():
        s = scores.detach().requires_grad_()
        fn(s, targets).backward()
        return s.grad

    return step


def max_differences(fn, n: int) -> tuple[float, float]:
    """Largest |loss difference| and |gradient difference| of ``fn`` vs gatrank, in float64."""
    scores, targets = _inputs(n, torch.float64, seed=n)
    s1 = scores.clone().requires_grad_()
    s2 = scores.clone().requires_grad_()
    a, b = _gatrank(s1, targets), fn(s2, targets, **LOSS_KWARGS)
    (ga,), (gb,) = torch.autograd.grad(a, s1), torch.autograd.grad(b, s2)
    return float((a - b).detach().abs()), float((ga - gb).abs().max())


_MEM_SETUP = """
import torch
from gatrank import losses
from benchmarks.loss import _inputs, LOSS_KWARGS
from benchmarks.references import allrank_style_loss
if {dense}:
    losses.CHUNK_THRESHOLD = 10**9
scores, targets = _inputs({n})
scores.requires_grad_()
fn = allrank_style_loss if {reference} else losses.pairwise_rank_loss
"""
_MEM_CALL = """
out = fn(scores, targets, **LOSS_KWARGS)
(out if {reference} else out.loss).backward()
"""


def peak_mb(n: int, *, reference: bool = False, dense: bool = False, threads: int = 1) -> float:
    """Extra peak RSS (MiB) of one forward + backward at ``n`` items, in a fresh process."""
    res = peak_rss_run(_MEM_SETUP.format(n=n, reference=reference, dense=dense),
                       _MEM_CALL.format(reference=reference), threads=threads)
    return res["peak_mb"]


def run(opts: Options) -> Section:
    torch.set_num_threads(opts.threads)
    sizes = [16, 64, 256, 1024, 4096]
    ref_sizes = {16, 64, 256, 1024} if opts.quick else set(sizes)
    repeat = 3 if opts.quick else 5
    sec = Section(
        key="loss",
        title="Pairwise loss (forward + backward)",
        method=(
            "Runbook settings (weight_by_diff, tie_eps 1e-6), float32, targets rounded to 0.01 "
            "so ties occur. Before timing, loss and gradients are compared with each reference "
            f"in float64. Time: best of {repeat} runs of forward + backward. Peak memory: extra "
            "max-RSS of one forward + backward in a fresh process (see the method note). "
            f"Above {CHUNK_THRESHOLD} items gatrank switches to its chunked path."
        ),
        columns=["items", "path", "gatrank ms", "allRank-style ms", "speedup",
                 "double loop ms", "speedup vs loop", "max |dloss|", "max |dgrad|",
                 "gatrank peak MB", "allRank-style peak MB"],
    )
    speedup_1024 = float("nan")
    peak_4096 = float("nan")
    max_diff = 0.0
    for n in sizes:
        scores, targets = _inputs(n)
        row = {"items": n, "path": "chunked" if n > CHUNK_THRESHOLD else "dense"}
        t_ours = best_time(_fwd_bwd(_gatrank, scores, targets), repeat)
        row["gatrank ms"] = t_ours * 1e3
        if n in ref_sizes:
            dl, dg = max_differences(allrank_style_loss, n)
            row["max |dloss|"], row["max |dgrad|"] = dl, dg
            max_diff = max(max_diff, dl, dg)
            ref = _fwd_bwd(lambda s, y: allrank_style_loss(s, y, **LOSS_KWARGS), scores, targets)
            t_ref = best_time(ref, 1 if n >= 4096 else repeat, warmup=0 if n >= 1024 else 1)
            row["allRank-style ms"] = t_ref * 1e3
            row["speedup"] = t_ref / t_ours
            if n == 1024:
                speedup_1024 = row["speedup"]
        if n == 64:
            dl, dg = max_differences(double_loop_loss, n)
            max_diff = max(max_diff, dl, dg)
            loop = _fwd_bwd(lambda s, y: double_loop_loss(s, y, **LOSS_KWARGS), scores, targets)
            t_loop = best_time(loop, 1 if opts.quick else 3)
            row["double loop ms"] = t_loop * 1e3
            row["speedup vs loop"] = t_loop / t_ours
        if n == 4096 or not opts.quick:
            row["gatrank peak MB"] = peak_mb(n, threads=opts.threads)
            if n == 4096:
                peak_4096 = row["gatrank peak MB"]
        if not opts.quick and n in ref_sizes and n <= 1024:
            row["allRank-style peak MB"] = peak_mb(n, reference=True, threads=opts.threads)
        sec.rows.append(row)
        logger.info("loss n=%d: %s", n, row)
    if not opts.quick:
        dense = {"items": 4096, "path": "dense (chunking off)",
                 "gatrank peak MB": peak_mb(4096, dense=True, threads=opts.threads)}
        scores, targets = _inputs(4096)

        def dense_step():
            from gatrank import losses

            old, losses.CHUNK_THRESHOLD = losses.CHUNK_THRESHOLD, 10**9
            try:
                _fwd_bwd(_gatrank, scores, targets)()
            finally:
                losses.CHUNK_THRESHOLD = old

        dense["gatrank ms"] = best_time(dense_step, 3) * 1e3
        sec.rows.append(dense)
    big_mb = float("nan")
    if not opts.quick:  # about 10 s of compute twice: full mode only
        big = {"items": CHUNKED_SIZE, "path": "chunked"}
        scores, targets = _inputs(CHUNKED_SIZE)
        big["gatrank ms"] = best_time(_fwd_bwd(_gatrank, scores, targets), 1, warmup=0) * 1e3
        big["gatrank peak MB"] = big_mb = peak_mb(CHUNKED_SIZE, threads=opts.threads)
        sec.rows.append(big)
    sec.checks = [
        Check("largest loss/gradient difference to the references (float64)", max_diff, "<=",
              AGREEMENT_TOL),
        Check("speedup vs allRank-style at 1,024 items", speedup_1024, ">=", SPEEDUP_TARGET, "x"),
        Check("extra peak memory at 4,096 items", peak_4096, "<=", MEMORY_TARGET_MB, "MB"),
    ]
    if not opts.quick:
        sec.checks.append(Check("extra peak memory at 16,384 items (chunked)", big_mb, "<=",
                                CHUNKED_TARGET_MB, "MB"))
    return sec
