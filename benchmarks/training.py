"""Training loop: graphs per second of ``gatrank.training`` against a bare PyG loop.

Both train the same model (same config and seed) with the same batch size, loss, gradient
clipping and Adam settings; gatrank's loop also computes everything it logs (metrics on the
training set every ``log_every`` epochs, gradient norms, valid-pair counts, validation metrics
every epoch in full training) and logs at INFO like the CLI. Target: ratio >= 0.9.
"""

from __future__ import annotations

import gc
import logging
import os
import statistics
import time
from collections.abc import Callable, Iterator

import torch

from benchmarks.common import Check, Options, Section
from benchmarks.references import bare_pyg_epochs
from gatrank.config import Config, overfit_config
from gatrank.model import build_model
from gatrank.runtime import resolve_device, set_seed
from gatrank.training import loop as training_loop
from gatrank.training import train

__all__ = ["run", "RATIO_TARGET"]

logger = logging.getLogger(__name__)

RATIO_TARGET = 0.9


def _load_default():
    from gatrank.data import load_graphs
    from gatrank.datasets import default_manifest

    return load_graphs(default_manifest())


class _Interleaved:
    """gatrank's ``train()`` and the bare loop timed epoch by epoch in turns, in one thread.

    ``train()`` runs unchanged but for its ``_run_epoch``, which is wrapped: each of gatrank's
    epochs (train, validate, log, snapshot) is timed next to one epoch of the bare loop (a
    :func:`~benchmarks.references.bare_pyg_epochs` generator), who goes first alternating by
    epoch and by round. On a shared machine the speed of a core changes between states that
    last seconds (the same epoch's CPU time moves by 30%, and consecutive epochs' times
    correlate at 0.8); two epochs a fraction of a second apart see the same state, where two
    whole runs taken in turns did not (the ratio of such runs moved from 0.76 to 1.18 round by
    round). Each loop draws its own random numbers (dropout): the global RNG state is swapped
    around the bare loop's steps, outside the timing.
    """

    def __init__(self, ours: Callable[[], None], bare: Callable[[], Iterator[None]],
                 clock: Callable[[], float]) -> None:
        self.ours, self.bare, self.clock = ours, bare, clock
        self.rounds: list[dict[str, float]] = []
        """Per round, each loop's time: its epochs plus its time outside them."""

    def round(self, r: int) -> None:
        clock = self.clock
        gc.collect()
        run_bare = self.bare()
        t = clock()
        next(run_bare)  # the bare loop's set-up
        bare_outside = clock() - t
        bare_rng = torch.get_rng_state()
        times: dict[str, list[float]] = {"bare": [], "gatrank": []}
        in_hook = 0.0
        run_epoch = training_loop._run_epoch

        def bare_epoch() -> None:
            nonlocal bare_rng
            ours_rng = torch.get_rng_state()
            torch.set_rng_state(bare_rng)
            t = clock()
            next(run_bare)
            times["bare"].append(clock() - t)
            bare_rng = torch.get_rng_state()
            torch.set_rng_state(ours_rng)

        def both(*args, **kwargs):
            nonlocal in_hook
            h = clock()
            if (r + len(times["gatrank"])) % 2 == 0:
                bare_epoch()
            t = clock()
            try:
                run_epoch(*args, **kwargs)
            finally:
                times["gatrank"].append(clock() - t)
            if len(times["bare"]) < len(times["gatrank"]):
                bare_epoch()
            in_hook += clock() - h

        training_loop._run_epoch = both
        try:
            t = clock()
            self.ours()
            ours_total = clock() - t
        finally:
            training_loop._run_epoch = run_epoch
        t = clock()
        for _ in run_bare:  # epochs gatrank did not run (none when both run the same number)
            raise RuntimeError("the bare loop has more epochs than gatrank's run")
        bare_outside += clock() - t
        if len(times["bare"]) != len(times["gatrank"]):
            raise RuntimeError(f"the loops ran {len(times['bare'])} and {len(times['gatrank'])}"
                               " epochs")
        self.rounds.append({"bare": bare_outside + sum(times["bare"]),
                            "gatrank": ours_total - in_hook + sum(times["gatrank"])})

    def ratio(self) -> float:
        """The median over rounds of bare / gatrank time within a round: each round's two times
        were measured side by side, so the machine's state cancels in their ratio (measured
        0.91-0.99 round by round, where whole runs in turns gave 0.76-1.18)."""
        return statistics.median(r["bare"] / r["gatrank"] for r in self.rounds)

    def median_times(self) -> dict[str, float]:
        return {k: statistics.median(r[k] for r in self.rounds) for k in ("bare", "gatrank")}


def _pair(cfg: Config, gs, splits: dict, device: torch.device):
    """(gatrank run, bare loop generator) for ``cfg.training.epochs`` epochs each."""
    tc, lc = cfg.training, cfg.loss
    overfit = tc.overfit_n > 0
    train_graphs = [gs[i] for i in splits["train"]]
    val_graphs = [gs[i] for i in splits.get("val", [])]

    def ours() -> None:
        train(cfg, graphs=gs, splits=splits, progress=False)

    def bare() -> Iterator[None]:  # set-up on the first next(), as train() builds its model
        set_seed(tc.seed)
        model = build_model(gs.num_features, cfg.model)
        yield from bare_pyg_epochs(
            model, train_graphs, batch_size=tc.batch_size, learning_rate=tc.learning_rate,
            epochs=tc.epochs, loss_kwargs={"margin_eps": lc.margin_eps, "tie_eps": lc.tie_eps,
                                           "temperature": lc.temperature,
                                           "weight_by_diff": lc.weight_by_diff},
            grad_clip=tc.grad_clip, shuffle=not overfit, seed=tc.seed, device=device,
            val_graphs=val_graphs)

    return ours, bare, len(train_graphs)


def run(opts: Options) -> Section:
    torch.set_num_threads(opts.threads)
    device = resolve_device(opts.device)
    on_cpu = device.type == "cpu"
    # CPU time on CPU (one torch thread: the work done, robust to other processes on a shared
    # machine); wall time on CUDA, where the host waits for the device.
    clock = time.process_time if on_cpu else time.perf_counter
    clock_name = "CPU time" if on_cpu else "wall time"
    # a fixed matmul loop's CPU time on this shared machine varies by up to 1.6x from one
    # second to the next. Whole runs taken in turns, each loop's time the sum of its epochs'
    # best times across 9 runs, still gave 0.85 to 1.02 for the same code in CI and here: the
    # epochs are interleaved instead, and the ratio taken within each round (_Interleaved)
    # (0.91-0.99 round by round; the median of 7 rounds gave 0.953-0.955 in four runs): the
    # median of 5 stays within a few percent
    repeat = 5
    repeat_overfit = 5  # rounds of ~5 s (epochs of ~20 ms)
    overfit_epochs = 100 if opts.quick else 500
    # 20 epochs in both modes: the logged epochs 1, 10, 20 then weigh as in a longer run (the
    # runbook's 100 epochs log 11 of 100); at 10 epochs the epoch-1 record alone is a tenth
    full_epochs = 20
    full_graphs = 300 if opts.quick else None
    sec = Section(
        key="training",
        title="Training loop throughput",
        method=(
            "gatrank.training (INFO logging to a null handler, as the CLI logs; no output folder) "
            "vs a bare PyG loop: forward, the same loss, backward, clip_grad_norm_(1.0), Adam, "
            "nothing else; in full training both also select the best epoch by validation "
            "Spearman (the bare loop scores the validation graphs after every epoch with scipy "
            "and keeps the best weights), so the ratio is the cost of gatrank's diagnostics, "
            "logging and resumable snapshots. Same model, seed, batch size and data; default "
            "log_every (10). "
            f"{repeat} rounds ({repeat_overfit} for the overfit test), each running both loops "
            "with their epochs in turns (an epoch of one, then the same epoch of the other; "
            "who goes first alternates by epoch and by round), timed in "
            f"{clock_name} per epoch; ratio = the median over rounds of bare time / gatrank "
            "time within the round, graphs/s = training graphs x epochs / the loop's median "
            "time over rounds (gatrank's time includes building the model, "
            f"validation every epoch and the final test evaluation). Device: {device}, "
            f"{opts.threads} torch thread(s)."
        ),
        columns=["mode", "graphs", "epochs", "batch size", "bare PyG graphs/s",
                 "gatrank graphs/s", "ratio"],
    )
    train_logger = logging.getLogger("gatrank.training")
    old_level, old_propagate = train_logger.level, train_logger.propagate
    null = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115 - closed below
    train_logger.setLevel(logging.INFO)
    train_logger.propagate = False
    train_logger.addHandler(null)
    try:
        gs = _load_default()
        base = Config().updated({"training.device": opts.device})
        from gatrank.data import split_indices

        full_set = gs.subset(list(range(full_graphs))) if full_graphs else gs
        cases = [
            ("overfit test (runbook: 32 graphs, one batch)", gs,
             overfit_config(base, 32).updated({"training.epochs": overfit_epochs}),
             {"train": list(range(32)), "val": [], "test": []}),
            (f"full training (chembl-activity, {len(full_set)} graphs)", full_set,
             base.updated({"training.epochs": full_epochs, "training.patience": 0}),
             split_indices(full_set, seed=0, val_fraction=0.1, test_fraction=0.1)),
        ]
        ratios = {}
        for name, graphs, cfg, splits in cases:
            ours, bare, n_train = _pair(cfg, graphs, splits, device)
            t0 = time.perf_counter()
            timing = _Interleaved(ours, bare, clock)
            for r in range(repeat_overfit if cfg.training.overfit_n > 0 else repeat):
                timing.round(r)
            times = timing.median_times()
            logger.info("training %s: median %s, per-round ratios %s (%.0fs)", name, times,
                        [round(r["bare"] / r["gatrank"], 3) for r in timing.rounds],
                        time.perf_counter() - t0)
            work = n_train * cfg.training.epochs
            ratios[name] = timing.ratio()
            sec.rows.append({"mode": name, "graphs": n_train, "epochs": cfg.training.epochs,
                             "batch size": min(cfg.training.batch_size, n_train),
                             "bare PyG graphs/s": work / times["bare"],
                             "gatrank graphs/s": work / times["gatrank"],
                             "ratio": ratios[name]})
    finally:
        train_logger.removeHandler(null)
        null.stream.close()
        train_logger.setLevel(old_level)
        train_logger.propagate = old_propagate
    sec.checks = [Check(f"gatrank / bare PyG throughput, {name.split(' (')[0]}", r, ">=",
                        RATIO_TARGET) for name, r in ratios.items()]
    return sec
