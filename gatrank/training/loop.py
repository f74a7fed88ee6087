"""One training loop for both of the runbook's modes.

- Overfit mode (``training.overfit_n > 0``): the first N graphs, no validation split, and the
  runbook's settings (see :func:`gatrank.config.overfit_config`). It answers "can this model
  learn at all?".
- Full training: train/val/test split, best checkpoint by validation Spearman, early stopping.

Every ``log_every`` epochs (and at the first and last epoch) one record is logged and, with an
output folder, appended to ``metrics.jsonl``: loss, pairwise accuracy, Spearman, score mean/std,
gradient norm (total and per layer), pooled-embedding spread, valid pairs per batch and, in full
training, the same metrics on the validation split.

Under ``torchrun`` (``WORLD_SIZE`` > 1) the same loop trains with distributed data parallelism:
see :mod:`gatrank.training.distributed` for the conventions (global batch size, rank 0 writes).
"""

from __future__ import annotations

import functools
import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn
from tqdm.auto import tqdm  # already imported by torch_geometric: no cost to import it here

from gatrank.baselines import fit_baselines
from gatrank.config import Config
from gatrank.io import append_jsonl, write_json
from gatrank.metrics import paired_bootstrap, ranking_metrics
from gatrank.runtime import environment_info, torch_threads
from gatrank.training.checkpoint import best_checkpoint, load_resume
from gatrank.training.epoch import (
    NonFiniteError,
    Probe,
    epoch_record,
    format_record,
    train_epoch,
)
from gatrank.training.findings_file import remove_findings
from gatrank.training.scoring import predict, split_metrics
from gatrank.training.setup import Setup, set_up
from gatrank.training.state import LoopState

__all__ = ["TrainResult", "train"]

logger = logging.getLogger(__name__)

Callback = Callable[[dict[str, Any]], None]
"""Called with each logged record (rank 0 only)."""
StopRule = Callable[[Sequence[dict[str, Any]]], "str | None"]
"""``stop_when(history)``: a reason to stop after this logged epoch, or None/"" to go on."""


class _Terminated(KeyboardInterrupt):
    """SIGTERM, routed through the Ctrl-C path so both save a resumable ``last.pt``."""


@dataclass
class TrainResult:
    model: nn.Module | None
    """The trained model, with the best weights loaded (last weights in overfit mode); None
    for a run read back from its files (:func:`gatrank.training.history.read_run`)."""
    history: list[dict[str, Any]]
    """One record per logged epoch (what ``metrics.jsonl`` holds)."""
    summary: dict[str, Any]
    """Everything ``summary.json`` holds: config, splits, best epoch, test metrics, status, and
    the dropout the overfit test switched off inside the model (``dropout_off``: one dict per
    site, see :class:`gatrank.training.dropout.DropoutOff`; ``[]`` in full training)."""
    splits: dict[str, list[int]] = field(default_factory=dict)
    """Indices into the graph set for ``train``/``val``/``test``."""


def _route_sigterm() -> Callable[[], Any]:
    """Make SIGTERM raise :class:`_Terminated` (the Ctrl-C path); returns the undo function.

    Signal handlers can only be installed from the main thread; elsewhere nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum: int, frame: Any) -> None:
        raise _Terminated(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(
        signal.SIGTERM, previous if previous is not None else signal.SIG_DFL
    )


def _cpu_threads(fn: Callable) -> Callable:
    """Run ``fn(config, ...)`` with ``config.training.cpu_threads`` torch threads, then restore."""

    @functools.wraps(fn)
    def wrapper(config: Config, *args: Any, **kwargs: Any) -> Any:
        with torch_threads(config.training.cpu_threads):
            return fn(config, *args, **kwargs)

    return wrapper


@_cpu_threads
def train(
    config: Config,
    *,
    graphs=None,
    model: nn.Module | str | Callable | None = None,
    loss: str | Callable | None = None,
    out_dir: str | Path | None = None,
    callbacks: Sequence[Callback] = (),
    progress: bool = True,
    splits: dict[str, list[int]] | None = None,
    with_baseline: bool = False,
    probes: Sequence[Probe] = (),
    resume: str | Path | None = None,
    stop_when: StopRule | None = None,
    checkpoints: Sequence[str] = ("best.pt", "last.pt"),
) -> TrainResult:
    """Train a ranking model and return it with its history.

    Args:
        config: the run's configuration; ``training.overfit_n > 0`` selects overfit mode, whose
            training steps run with every dropout inside the model off (not only
            ``model.dropout``), listed in ``summary["dropout_off"]``.
        graphs: a :class:`gatrank.data.GraphSet`; default: load ``config.data.dataset`` or
            ``config.data.manifest`` (or the embedded default).
        model: ``None``/``"gat"``/``"linear"``/an import string, a class or factory (its
            constructor arguments filled in as an import string's, see
            :func:`gatrank.model.build_model`), or a module instance (trained in place).
        loss: ``None`` for gatrank's loss, or a user loss (import string or callable).
        out_dir: where to write ``metrics.jsonl``, ``summary.json`` and checkpoints.
        callbacks: called with each logged record (live plots in notebooks).
        progress: show a tqdm progress bar over epochs.
        splits: explicit split indices (otherwise derived from the manifest and seed).
        with_baseline: in full training, also fit the baselines of :mod:`gatrank.baselines`
            (to convergence) on the same splits and report them beside the model, with the
            model's lead over each (``summary["baselines"]``; the linear one also as
            ``summary["baseline"]``).
        probes: measurements taken at each logged epoch: ``probe(model, train_graphs, device)``
            returns a dict merged into the record (see :mod:`gatrank.checks.probes`). They run
            after the epoch's last optimizer step, so gradients of that step are still there.
        resume: a ``last.pt`` of an earlier run with the same config (only
            ``training.epochs``/``device``/``nonfinite``/``log_every``/``patience``/
            ``enable_debug_logs`` may change): continues after its last complete epoch. On CPU
            the result equals an uninterrupted run's, weights and metrics.
        stop_when: called with the history after each logged epoch; a non-empty string it
            returns stops training there, as early stopping does (status ``completed``, the
            string as ``stop_reason``), e.g. :func:`gatrank.checks.verdict.stop_at_verdict`
            ends the overfit test once every pass criterion holds.
        checkpoints: which of ``best.pt`` and ``last.pt`` to write into ``out_dir`` (both by
            default; ``()`` keeps only ``metrics.jsonl`` and ``summary.json``, e.g. a report
            folder's overfit test, whose model is not used again; without ``last.pt`` the run
            cannot be resumed).

    Under ``torchrun`` (``WORLD_SIZE`` > 1) the loop trains with DistributedDataParallel: each of
    the W processes takes ``batch_size // W`` graphs per step from a seeded
    ``DistributedSampler``, gradients are averaged, every process evaluates the same validation
    graphs (so early stopping agrees), and only rank 0 writes files, logs and calls
    ``callbacks``. Exact resume is promised for one process only.

    Ctrl-C or SIGTERM stops training and keeps the state after the last *complete* epoch:
    ``last.pt`` (with optimizer, history, best-so-far, early-stopping counter and all RNG
    states), ``summary.json`` with status ``interrupted``, and the returned model. ``last.pt``
    is also refreshed at every logged epoch, so a hard crash loses at most ``log_every`` epochs.

    Raises:
        NonFiniteError: a NaN/Inf loss or gradient with ``training.nonfinite == "stop"``, or
            non-finite parameters in either mode; the message names the epoch and batch.
            ``last.pt`` then holds the last complete epoch if its weights are finite (else the
            previous file is left alone), ``best.pt`` is never overwritten with non-finite
            weights, and ``summary.json`` has status ``nonfinite``.
    """
    t_start = time.perf_counter()
    s = set_up(config, graphs=graphs, model=model, loss=loss, splits=splits, out_dir=out_dir,
               checkpoints=checkpoints)
    st = LoopState(net=s.net, optimizer=s.optimizer, loader_gen=s.loader_gen, device=s.device,
                   t_start=t_start)
    if resume:
        st.resume(load_resume(resume, s.run))
        logger.info("resuming from %s after epoch %d", resume, st.epoch)
    _start_metrics_log(s, st)
    failure = _run_epochs(s, st, progress=progress, callbacks=callbacks, probes=probes,
                          stop_when=stop_when)
    summary = _finish(s, st, failure, loss=loss, resume=resume, with_baseline=with_baseline)
    if failure is not None:
        raise failure
    return TrainResult(model=s.net, history=st.history, summary=summary, splits=s.splits)


def _start_metrics_log(s: Setup, st: LoopState) -> None:
    if s.out and s.main:
        s.out.mkdir(parents=True, exist_ok=True)
        # a resumed run's log restarts from the checkpoint's history (drops a lost partial epoch)
        (s.out / "metrics.jsonl").write_text("")
        append_jsonl(s.out / "metrics.jsonl", st.history)
        # this log is not a Monitor's: findings one left here would be read as this run's
        remove_findings(s.out)


def _run_epochs(
    s: Setup, st: LoopState, *, progress: bool, callbacks: Sequence[Callback],
    probes: Sequence[Probe], stop_when: StopRule | None,
) -> NonFiniteError | None:
    """The epoch loop, and where an interruption or a non-finite step leaves the state: after
    the last complete epoch. Returns the error to raise once the summary is written."""
    tc = s.tc
    bar = None
    if progress and s.main:
        bar = tqdm(total=tc.epochs, initial=min(st.epoch, tc.epochs),
                   desc="overfit" if s.overfit else "train", unit="epoch", leave=False)
    st.last_good = st.snapshot()
    # a resumed early-stopped run stays stopped
    last_epoch = st.epoch if st.early_stopped else tc.epochs
    undo_sigterm = _route_sigterm()
    try:
        for epoch in range(st.epoch + 1, last_epoch + 1):
            st.epoch = epoch
            _run_epoch(s, st, last_epoch, bar, callbacks, probes, stop_when)
            if st.early_stopped:
                break
    except KeyboardInterrupt as exc:
        how = "SIGTERM" if isinstance(exc, _Terminated) else "Ctrl-C"
        st.status = "interrupted"
        st.restore(st.last_good)  # a half-done epoch cannot be resumed exactly: drop it
        st.stop_reason = (f"{how} during epoch {st.epoch}; kept the state after epoch "
                          f"{st.last_good.epoch}")
        st.epoch = st.last_good.epoch
        logger.warning("training interrupted (%s); saving the state after epoch %d", how,
                       st.epoch)
    except NonFiniteError as exc:
        if st.last_good.finite:
            st.restore(st.last_good)
        st.epoch = st.last_good.epoch
        kept = "; the weights after it are non-finite, so last.pt was not written"
        if st.last_good.finite:
            kept = f", saved in {s.out / 'last.pt'}" if s.out else ""
        st.status, st.stop_reason = "nonfinite", (
            f"{exc} Last good state: after epoch {st.epoch}{kept}.")
        return NonFiniteError(st.stop_reason)
    finally:
        undo_sigterm()
        if bar is not None:
            bar.close()
    return None


def _run_epoch(
    s: Setup, st: LoopState, last_epoch: int, bar: tqdm | None, callbacks: Sequence[Callback],
    probes: Sequence[Probe], stop_when: StopRule | None,
) -> None:
    """Epoch ``st.epoch``: train, validate, decide on stopping, log, snapshot."""
    tc = s.tc
    # forward backward update
    stats = train_epoch(s, st)
    # validation and the best epoch
    val_metrics: dict[str, float] = {}
    if s.val_set:
        val_metrics = split_metrics(s.net, s.val_batches, s.device, s.tie_eps, prefix="val_")
        if st.update_best(val_metrics["val_spearman"]):
            s.save("best.pt", best_checkpoint(st.epoch, s.net, s.optimizer, st.history), "best")
    # termination conditions
    log_now = st.epoch == 1 or st.epoch % tc.log_every == 0 or st.epoch == tc.epochs
    early = st.update_early_stop(tc.patience, validated=bool(s.val_set))
    # logging
    if log_now or early:
        _log(s, st, epoch_record(s, st, stats, val_metrics, probes), callbacks)
        reason = stop_when(st.history) if stop_when is not None and not early else None
        if reason:  # every rank holds the same reduced history, so all stop together
            st.early_stopped, st.stop_reason, early = True, reason, True
    if bar is not None:
        bar.update(1)
        bar.set_postfix(loss=f"{stats.loss:.4f}")
    # snapshot: what an interruption falls back to; on disk at every logged epoch
    st.last_good = st.snapshot()
    periodic = log_now and not early and st.epoch < last_epoch
    if periodic and st.last_good.finite:  # never NaN weights on disk
        s.save("last.pt", st.last_good.entries, "running")


def _log(s: Setup, st: LoopState, record: dict[str, Any], callbacks: Sequence[Callback]) -> None:
    st.history.append(record)
    if s.out and s.main:
        append_jsonl(s.out / "metrics.jsonl", [record])
    if s.tc.enable_debug_logs and s.main:
        logger.info(format_record(record))
    for cb in callbacks if s.main else ():
        cb(record)


def _finish(
    s: Setup, st: LoopState, failure: NonFiniteError | None, *, loss: str | Callable | None,
    resume: str | Path | None, with_baseline: bool,
) -> dict[str, Any]:
    """After the loop: the final ``last.pt`` (never with non-finite weights), the best weights
    loaded, the summary with the test metrics and the baseline, ``best.pt`` where no validation
    chose one, and ``summary.json``."""
    if st.status != "nonfinite" or st.last_good.finite:
        s.save("last.pt", st.last_good.entries, st.status)
    if st.best_state is not None:
        s.net.load_state_dict(st.best_state)
    summary = _summary(s, st, loss=loss, resume=resume)
    test_idx = s.splits.get("test", []) if failure is None else []
    if test_idx:
        summary["test"] = split_metrics(s.net, [s.graphs[i] for i in test_idx], s.device,
                                        s.tie_eps)
    if with_baseline and not s.overfit and st.status == "completed":
        summary["baselines"] = _baselines(s)
        linear = summary["baselines"].get("linear", {})
        summary["baseline"] = {"model": "linear",  # the runbook's one, as summaries had it
                               "best_val_spearman": linear.get("fit", {}).get("val_spearman"),
                               "test": linear.get("test", {})}
    if s.out and s.main:
        if st.best_state is None and failure is None:
            s.save("best.pt", best_checkpoint(st.epoch, s.net, s.optimizer, st.history), "best")
        write_json(s.out / "summary.json", summary)
    return summary


def _summary(
    s: Setup, st: LoopState, *, loss: str | Callable | None, resume: str | Path | None,
) -> dict[str, Any]:
    """What ``summary.json`` holds (the test metrics and the baseline are added after)."""
    dropped = getattr(s.graphs, "dropped", [])
    return {
        "mode": "overfit" if s.overfit else "full",
        "status": st.status,
        "stop_reason": st.stop_reason,
        "epochs_run": st.epoch,
        "model": s.run.model_name,
        "loss": loss if isinstance(loss, str) and loss
        else ("custom" if loss else "pairwise_rank_loss"),
        "seed": s.tc.seed,
        "device": str(s.device),
        "distributed": {"world_size": s.di.world_size, "backend": s.di.backend,
                        "batch_size_per_process": s.loader.batch_size} if s.di.enabled else None,
        "num_graphs": len(s.graphs),
        "split_sizes": {k: len(v) for k, v in s.splits.items()},
        "skipped_steps": st.skipped_steps,
        "dropout_off": s.dropout_off.records if s.dropout_off is not None else [],
        "resumed_from": str(resume) if resume else None,
        "num_dropped_rows": len({(p.line, p.index, p.id) for p in dropped}),
        "dropped_rows": [vars(p) for p in dropped],
        "final": st.history[-1] if st.history else {},
        "best_epoch": st.best_epoch if s.val_set else st.epoch,
        "best_val_spearman": st.best_val_spearman if s.val_set else None,
        "wall_time_s": round(st.elapsed(), 3),
        "config": s.config.to_dict(),
        "versions": environment_info(),
    }


def _baselines(s: Setup) -> dict[str, Any]:
    """The fitted baselines (:func:`gatrank.baselines.fit_baselines`) on the same splits: per
    baseline how it was fitted (or why it was skipped), its test metrics and the model's
    Spearman lead over it with its paired bootstrap interval (``summary["baselines"]``)."""
    if s.tc.enable_debug_logs and s.main:
        logger.info("fitting the baselines to convergence on the same splits")
    fitted = fit_baselines(s.graphs, s.splits, tie_eps=s.tie_eps, seed=s.tc.seed)
    test = list(s.splits.get("test", []))
    pred = predict(s.net, [s.graphs[i] for i in test], s.device) if test else None
    out: dict[str, Any] = {}
    for name, b in fitted.items():
        entry: dict[str, Any] = {"fit": b.info, "skipped": b.skipped}
        if not b.skipped and pred is not None:
            model_s, y, base_s = pred["scores"].numpy(), pred["targets"].numpy(), b.scores(test)
            entry["test"] = ranking_metrics(base_s, y, tie_eps=s.tie_eps)
            entry["margin"] = paired_bootstrap(model_s, base_s, y, seed=s.tc.seed)
        out[name] = entry
    return out
