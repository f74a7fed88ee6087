"""Training loop: graphs per second of ``gatrank.training`` against a bare PyG loop.

Both train the same model (same config and seed) with the same batch size, loss, gradient
clipping and Adam settings; gatrank's loop also computes everything it logs (metrics on the
training set every ``log_every`` epochs, gradient norms, valid-pair counts, validation metrics
every epoch in full training) and logs at INFO like the CLI. Target: ratio >= 0.9.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator

import torch

from benchmarks.common import Check, Options, Section, alternate_by_epoch
from benchmarks.references import bare_pyg_loop
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


@contextlib.contextmanager
def _epoch_clock(times: list[float], clock: Callable[[], float]) -> Iterator[None]:
    """Append the ``clock()`` time of each of train()'s epochs (train, validate, log,
    snapshot: its ``_run_epoch``) to ``times``; the loop itself is not changed."""
    run_epoch = training_loop._run_epoch

    def timed(*args, **kwargs):
        t = clock()
        try:
            return run_epoch(*args, **kwargs)
        finally:
            times.append(clock() - t)

    training_loop._run_epoch = timed
    try:
        yield
    finally:
        training_loop._run_epoch = run_epoch


def _pair(cfg: Config, gs, splits: dict, device: torch.device, clock: Callable[[], float]):
    """(gatrank run, bare run) closures training for ``cfg.training.epochs`` epochs, each
    appending its epochs' times to the list it is given."""
    tc, lc = cfg.training, cfg.loss
    overfit = tc.overfit_n > 0
    train_graphs = [gs[i] for i in splits["train"]]
    val_graphs = [gs[i] for i in splits.get("val", [])]

    def ours(epoch_times: list[float]) -> None:
        with _epoch_clock(epoch_times, clock):
            train(cfg, graphs=gs, splits=splits, progress=False)

    def bare(epoch_times: list[float]) -> None:
        set_seed(tc.seed)
        model = build_model(gs.num_features, cfg.model)
        bare_pyg_loop(model, train_graphs, batch_size=tc.batch_size,
                      learning_rate=tc.learning_rate, epochs=tc.epochs,
                      loss_kwargs={"margin_eps": lc.margin_eps, "tie_eps": lc.tie_eps,
                                   "temperature": lc.temperature,
                                   "weight_by_diff": lc.weight_by_diff},
                      grad_clip=tc.grad_clip, shuffle=not overfit, seed=tc.seed, device=device,
                      val_graphs=val_graphs, epoch_times=epoch_times, clock=clock)

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
    # second to the next; the best of 3 whole runs missed the target in 3 of 8 CI-like runs.
    # The best time of each epoch across 5 runs (see alternate_by_epoch) shrugs off such bursts.
    # quick mode's 300-graph epochs are short (~60 ms), so a moment of load from elsewhere moves
    # a 5-run best by 8% (0.86-0.94 in consecutive runs on a shared 2-core machine): 9 runs
    repeat = 9 if opts.quick else 5
    # the overfit test's runs last ~2 s (epochs of ~20 ms), so more of them cost little and a
    # few seconds of load from elsewhere can no longer cover most of one loop's runs
    repeat_overfit = 9
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
            f"{repeat} ({repeat_overfit} for the overfit test) alternating runs each (order "
            "reversed every other round), timed in "
            f"{clock_name} per epoch; a loop's time is the sum of each epoch's best time "
            "across its runs plus its best time outside the epochs; graphs/s = "
            "training graphs x epochs / time (gatrank's time includes building the model, "
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
            ours, bare, n_train = _pair(cfg, graphs, splits, device, clock)
            t0 = time.perf_counter()
            rounds = repeat_overfit if cfg.training.overfit_n > 0 else repeat
            best = alternate_by_epoch({"bare": bare, "gatrank": ours}, repeat=rounds,
                                      clock=clock)
            logger.info("training %s: %s (%.0fs)", name, best, time.perf_counter() - t0)
            work = n_train * cfg.training.epochs
            ratio = best["bare"] / best["gatrank"]
            ratios[name] = ratio
            sec.rows.append({"mode": name, "graphs": n_train, "epochs": cfg.training.epochs,
                             "batch size": min(cfg.training.batch_size, n_train),
                             "bare PyG graphs/s": work / best["bare"],
                             "gatrank graphs/s": work / best["gatrank"], "ratio": ratio})
    finally:
        train_logger.removeHandler(null)
        null.stream.close()
        train_logger.setLevel(old_level)
        train_logger.propagate = old_propagate
    sec.checks = [Check(f"gatrank / bare PyG throughput, {name.split(' (')[0]}", r, ">=",
                        RATIO_TARGET) for name, r in ratios.items()]
    return sec
