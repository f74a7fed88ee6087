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
import math
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler
from torch_geometric.loader import DataLoader

from gatrank.config import Config
from gatrank.io import append_jsonl, atomic_torch_save, write_json
from gatrank.losses import make_loss_fn
from gatrank.metrics import grad_norms
from gatrank.model import GATRanker, LinearBaseline, build_model
from gatrank.runtime import environment_info, resolve_device, set_seed, torch_threads
from gatrank.training import distributed as dist_
from gatrank.training.checkpoint import (
    checkpoint_config,
    clone_tensors,
    cpu_clone,
    data_fingerprint,
    load_resume,
    rng_state,
    set_rng_state,
)
from gatrank.training.scoring import COLLATE_ONCE_MAX, Collated, collate, predict, split_metrics

__all__ = [
    "NonFiniteError",
    "TrainResult",
    "predict",
    "train",
    "checkpoint_config",
]

logger = logging.getLogger(__name__)


class NonFiniteError(RuntimeError):
    """The loss or gradient norm became NaN/Inf and ``training.nonfinite`` is ``stop`` (or the
    parameters themselves are non-finite, which skipping steps cannot repair)."""


class _Terminated(KeyboardInterrupt):
    """SIGTERM, routed through the Ctrl-C path so both save a resumable ``last.pt``."""


@dataclass
class TrainResult:
    model: nn.Module
    """The trained model, with the best weights loaded (last weights in overfit mode)."""
    history: list[dict[str, Any]]
    """One record per logged epoch (what ``metrics.jsonl`` holds)."""
    summary: dict[str, Any]
    """Everything ``summary.json`` holds: config, splits, best epoch, test metrics, status."""
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


def _all_finite(state: dict[str, Tensor]) -> bool:
    return all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point())


def _batch_group(batch) -> Tensor | None:
    group = getattr(batch, "group", None)
    if group is None or bool((group < 0).all()):
        return None
    return group


def _resolve_model(model, in_channels: int, config: Config) -> tuple[nn.Module, str]:
    if isinstance(model, nn.Module):
        return model, type(model).__name__
    if callable(model) and not isinstance(model, str):
        return model(in_channels), getattr(model, "__name__", type(model).__name__)
    spec = model or ""
    return build_model(in_channels, config.model, spec), spec or "gat"


def _load_graphs(config: Config, graphs):
    if graphs is not None:
        return graphs
    from gatrank.data import load_graphs
    from gatrank.datasets import manifest_or_default

    manifest = manifest_or_default(config.data.manifest)
    return load_graphs(
        manifest, on_error=config.data.on_error, allow_outside_root=config.data.allow_outside_root
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
    callbacks: Sequence[Callable[[dict[str, Any]], None]] = (),
    progress: bool = True,
    splits: dict[str, list[int]] | None = None,
    with_baseline: bool = False,
    probes: Sequence[Callable[[nn.Module, list, torch.device], dict[str, Any]]] = (),
    resume: str | Path | None = None,
) -> TrainResult:
    """Train a ranking model and return it with its history.

    Args:
        config: the run's configuration; ``training.overfit_n > 0`` selects overfit mode.
        graphs: a :class:`gatrank.data.GraphSet`; default: load ``config.data.manifest`` (or the
            embedded default).
        model: ``None``/``"gat"``/``"linear"``/an import string, a factory ``in_channels ->
            nn.Module``, or a module instance.
        loss: ``None`` for gatrank's loss, or a user loss (import string or callable).
        out_dir: where to write ``metrics.jsonl``, ``summary.json`` and checkpoints.
        callbacks: called with each logged record (live plots in notebooks).
        progress: show a tqdm progress bar over epochs.
        splits: explicit split indices (otherwise derived from the manifest and seed).
        with_baseline: in full training, also train the linear baseline on the same splits
            and config and report it beside the model (``summary["baseline"]``).
        probes: measurements taken at each logged epoch: ``probe(model, train_graphs, device)``
            returns a dict merged into the record (see :mod:`gatrank.checks.probes`). They run
            after the epoch's last optimizer step, so gradients of that step are still there.
        resume: a ``last.pt`` of an earlier run with the same config (only
            ``training.epochs``/``device``/``nonfinite``/``log_every``/``patience``/
            ``enable_debug_logs`` may change): continues after its last complete epoch. On CPU
            the result equals an uninterrupted run's, weights and metrics.

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
    tc = config.training
    t_start = time.perf_counter()
    set_seed(tc.seed)
    device = resolve_device(tc.device)
    di = dist_.setup(device)  # a no-op unless launched by torchrun
    device = dist_.process_device(device, di)
    main = di.is_main
    if di.enabled and not main:
        dist_.barrier()  # rank 0 loads first and fills the SMILES cache; the others read it
    gs = _load_graphs(config, graphs)
    if di.enabled and main:
        dist_.barrier()
    overfit = tc.overfit_n > 0
    if splits is None:
        if overfit:
            n = min(tc.overfit_n, len(gs))
            splits = {"train": list(range(n)), "val": [], "test": []}
        else:
            from gatrank.data import split_indices

            splits = split_indices(
                gs,
                seed=tc.seed,
                val_fraction=config.data.val_fraction,
                test_fraction=config.data.test_fraction,
            )
    train_set = [gs[i] for i in splits["train"]]
    val_set = [gs[i] for i in splits.get("val", [])]
    if overfit and tc.overfit_n > len(gs):
        logger.warning(
            "training.overfit_n=%d but the data has only %d graphs: overfitting all of them",
            tc.overfit_n, len(gs),
        )
    if len(train_set) < 2:
        raise ValueError(
            f"only {len(train_set)} training graph(s): ranking needs at least 2; "
            "check the manifest's split column or training.overfit_n"
        )
    set_seed(tc.seed)  # model init independent of how many random draws loading took
    net, model_name = _resolve_model(model, gs.num_features, config)
    net = net.to(device)
    loss_fn = make_loss_fn(loss, config)
    optimizer = torch.optim.Adam(
        [p for p in net.parameters() if p.requires_grad],
        lr=tc.learning_rate,
        weight_decay=tc.weight_decay,
    )
    loader_gen = torch.Generator().manual_seed(tc.seed)
    sampler = None
    train_net: nn.Module = net
    if di.enabled:
        per_process = min(tc.batch_size, len(train_set)) // di.world_size
        if per_process < 2:
            raise ValueError(
                f"training.batch_size={tc.batch_size} over {di.world_size} processes leaves "
                f"{per_process} graph(s) per process and batch: ranking needs pairs; use "
                f"training.batch_size >= {2 * di.world_size} or fewer processes"
            )
        # the same seed on every rank: the sampler hands each rank a disjoint share per epoch
        sampler = DistributedSampler(train_set, num_replicas=di.world_size, rank=di.rank,
                                     shuffle=not overfit, seed=tc.seed, drop_last=False)
        loader = DataLoader(train_set, batch_size=per_process, sampler=sampler)
        train_net = DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None,
            # a user's model may leave parameters out of the forward pass
            find_unused_parameters=not isinstance(net, (GATRanker, LinearBaseline)),
        )
    else:
        loader = DataLoader(
            train_set,
            batch_size=min(tc.batch_size, len(train_set)),
            shuffle=not overfit,
            generator=loader_gen,
            drop_last=False,
        )
    val_batches = collate(val_set, device)  # evaluated every epoch: collate once
    small = len(train_set) <= COLLATE_ONCE_MAX  # a second, collated copy of it is affordable
    # an unshuffled one-process loader yields the same batches every epoch (the overfit test):
    # collate them once instead of once per epoch
    fixed_batches = (Collated(b.to(device) for b in loader)
                     if sampler is None and overfit and small else None)
    # the training graphs are scored at every logged epoch: collate them once too (the fixed
    # batches already hold them, in order)
    train_eval = fixed_batches or (collate(train_set, device) if small else train_set)
    out = Path(out_dir) if out_dir else None
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"epoch": 0, "val_spearman": -math.inf, "state": None}
    skipped_steps = 0
    status = "completed"
    stop_reason = ""
    epochs_since_best = 0
    early = False
    failure: NonFiniteError | None = None
    tie_eps = config.loss.tie_eps
    fingerprint = data_fingerprint(gs)
    spec = model_name if isinstance(model, str) or model is None else ""
    loss_spec = loss if isinstance(loss, str) else "custom" if loss else ""

    def snapshot(epochs_done: int) -> dict[str, Any]:
        """Everything an exact resume needs after ``epochs_done`` complete epochs."""
        return {
            "state_dict": cpu_clone(net.state_dict()),
            "optimizer": clone_tensors(optimizer.state_dict()),
            "epoch": epochs_done,
            "metrics": list(history),
            "resume": {
                "best_epoch": best["epoch"],
                "best_val_spearman": best["val_spearman"],
                "best_state": best["state"],  # replaced, never mutated: no copy needed
                "epochs_since_best": epochs_since_best,
                "skipped_steps": skipped_steps,
                "early_stopped": early,
                "stop_reason": stop_reason,
                "elapsed_s": time.perf_counter() - t_start,
                "rng": rng_state(loader_gen),
            },
        }

    def restore(state: dict[str, Any]) -> None:
        nonlocal history, best, epochs_since_best, skipped_steps, early, stop_reason
        net.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        history = list(state["metrics"])
        r = state["resume"]
        best = {
            "epoch": r["best_epoch"],
            "val_spearman": r["best_val_spearman"],
            "state": None if r["best_state"] is None
            else {k: v.to(device) for k, v in r["best_state"].items()},
        }
        epochs_since_best, skipped_steps = r["epochs_since_best"], r["skipped_steps"]
        early, stop_reason = r["early_stopped"], r["stop_reason"]

    def save(name: str, state: dict[str, Any], run_status: str) -> None:
        if out and main:
            atomic_torch_save(
                out / name,
                {
                    **state,
                    "config": config.to_dict(),
                    "model_spec": spec,
                    "loss_spec": loss_spec,
                    "model_name": model_name,
                    "in_channels": gs.num_features,
                    "splits": splits,
                    "data_fingerprint": fingerprint,
                    "status": run_status,
                },
            )

    start_epoch = 1
    if resume:
        ckpt = load_resume(
            resume, config, splits, gs.num_features, fingerprint, model_name, loss_spec
        )
        restore(ckpt)
        start_epoch = ckpt["epoch"] + 1
        t_start -= ckpt["resume"]["elapsed_s"]
        # last: model init and loader set-up above drew from the RNGs too
        set_rng_state(ckpt["resume"]["rng"], loader_gen)
        logger.info("resuming from %s after epoch %d", resume, ckpt["epoch"])
    if out and main:
        out.mkdir(parents=True, exist_ok=True)
        # a resumed run's log restarts from the checkpoint's history (drops a lost partial epoch)
        (out / "metrics.jsonl").write_text("")
        append_jsonl(out / "metrics.jsonl", history)

    bar = None
    if progress and main:
        from tqdm.auto import tqdm

        bar = tqdm(total=tc.epochs, initial=min(start_epoch - 1, tc.epochs),
                   desc="overfit" if overfit else "train", unit="epoch", leave=False)
    epoch = start_epoch - 1
    last_good = snapshot(epoch)
    last_epoch = epoch if early else tc.epochs  # a resumed early-stopped run stays stopped
    undo_sigterm = _route_sigterm()
    try:
        for epoch in range(start_epoch, last_epoch + 1):
            net.train()
            if sampler is not None:
                sampler.set_epoch(epoch)
            losses, pairs, norms = [], [], []
            per_layer: dict[str, float] = {}
            skipped_before = skipped_steps
            last_batch = len(loader) - 1
            for b_idx, batch in enumerate(fixed_batches or loader):
                batch = batch.to(device)
                optimizer.zero_grad(set_to_none=True)
                scores = train_net(batch).reshape(-1)
                lo = loss_fn(scores, batch.y.reshape(-1), _batch_group(batch))
                loss_val = float(lo.loss.detach())
                if lo.loss.requires_grad:
                    lo.loss.backward()
                elif di.enabled and scores.requires_grad:
                    # every rank must join DDP's gradient all-reduce, even with nothing to learn
                    (scores.sum() * 0.0).backward()
                if b_idx == last_batch:  # per-layer norms are logged for an epoch's last step
                    _, per_layer = grad_norms(net)
                # clip_grad_norm_ returns the total norm before clipping: one pass, no extra sync
                total = float(torch.nn.utils.clip_grad_norm_(
                    net.parameters(), tc.grad_clip if tc.grad_clip > 0 else math.inf
                ))
                finite = math.isfinite(loss_val) and math.isfinite(total)
                if di.enabled:  # all ranks skip or stop together
                    finite = not dist_.any_flag(not finite, device)
                if not finite:
                    msg = (
                        f"non-finite {'loss' if not math.isfinite(loss_val) else 'gradient norm'} "
                        f"at epoch {epoch}, batch {b_idx} (loss={loss_val}, grad_norm={total})"
                    )
                    params_ok = _all_finite(net.state_dict())
                    if not params_ok:
                        msg += ("; the parameters themselves are already NaN/Inf (an earlier step "
                                "diverged), so skipping steps cannot recover")
                    if tc.nonfinite == "stop" or not params_ok:
                        raise NonFiniteError(
                            msg + f"; stopped (training.nonfinite={tc.nonfinite}). Lower "
                            "training.learning_rate, keep training.grad_clip on, check the data "
                            "for NaN/Inf (gatrank check-data), or set training.nonfinite: skip "
                            "to skip such steps."
                        )
                    skipped_steps += 1
                    logger.warning("%s; step skipped (training.nonfinite=skip)", msg)
                    continue
                optimizer.step()
                losses.append(loss_val)
                pairs.append(lo.num_pairs)
                norms.append(total)
            if not losses and skipped_steps > skipped_before:
                raise NonFiniteError(
                    f"every step of epoch {epoch} was non-finite and skipped "
                    "(training.nonfinite=skip): training cannot make progress. Lower "
                    "training.learning_rate and check the data (gatrank check-data)."
                )
            if di.enabled:  # the epoch's loss and pair counts over every rank's batches
                n_loss, sum_loss, sum_pairs, n_zero = dist_.all_reduce_sum(
                    [len(losses), sum(losses), sum(pairs), sum(p == 0 for p in pairs)], device)
                train_loss = sum_loss / n_loss if n_loss else float("nan")
                pair_stats = {"valid_pairs_mean": sum_pairs / n_loss if n_loss else 0.0,
                              "batches_without_pairs": int(n_zero)}
            else:
                train_loss = float(np.mean(losses)) if losses else float("nan")
                pair_stats = {"valid_pairs_mean": float(np.mean(pairs)) if pairs else 0.0,
                              "batches_without_pairs": int(sum(p == 0 for p in pairs))}
            val_metrics: dict[str, float] = {}
            if val_set:
                val_metrics = split_metrics(net, val_batches, device, tie_eps, prefix="val_")
                if val_metrics["val_spearman"] > best["val_spearman"]:
                    best = {
                        "epoch": epoch,
                        "val_spearman": val_metrics["val_spearman"],
                        "state": {k: v.detach().clone() for k, v in net.state_dict().items()},
                    }
                    epochs_since_best = 0
                    save("best.pt", {"state_dict": cpu_clone(net.state_dict()),
                                     "optimizer": optimizer.state_dict(),
                                     "epoch": epoch, "metrics": history}, "best")
                else:
                    epochs_since_best += 1
            log_now = epoch == 1 or epoch % tc.log_every == 0 or epoch == tc.epochs
            early = bool(val_set) and tc.patience > 0 and epochs_since_best >= tc.patience
            if log_now or early:
                record = {
                    "epoch": epoch,
                    "loss": train_loss,
                    **split_metrics(net, train_eval, device, tie_eps),
                    "grad_norm": float(np.mean(norms)) if norms else 0.0,
                    "grad_norm_per_layer": per_layer,
                    **pair_stats,
                    "valid_pairs_min": int(min(pairs)) if pairs else 0,
                    "skipped_steps": skipped_steps,
                    "lr": optimizer.param_groups[0]["lr"],
                    "time_s": round(time.perf_counter() - t_start, 3),
                    **val_metrics,
                }
                for probe in probes:
                    record.update(probe(net, train_set, device))
                history.append(record)
                if out and main:
                    append_jsonl(out / "metrics.jsonl", [record])
                if tc.enable_debug_logs and main:
                    logger.info(_format_record(record))
                for cb in callbacks if main else ():
                    cb(record)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{train_loss:.4f}")
            if early:
                stop_reason = f"early stop: no better validation Spearman for {tc.patience} epochs"
            last_good = snapshot(epoch)
            periodic = log_now and not early and epoch < last_epoch
            if periodic and _all_finite(last_good["state_dict"]):  # never NaN weights on disk
                save("last.pt", last_good, "running")
            if early:
                break
    except KeyboardInterrupt as exc:
        how = "SIGTERM" if isinstance(exc, _Terminated) else "Ctrl-C"
        status = "interrupted"
        restore(last_good)  # a half-done epoch cannot be resumed exactly: drop it
        stop_reason = f"{how} during epoch {epoch}; kept the state after epoch {last_good['epoch']}"
        epoch = last_good["epoch"]
        logger.warning("training interrupted (%s); saving the state after epoch %d", how, epoch)
    except NonFiniteError as exc:
        if _all_finite(last_good["state_dict"]):
            restore(last_good)
        epoch = last_good["epoch"]
        kept = "; the weights after it are non-finite, so last.pt was not written"
        if _all_finite(last_good["state_dict"]):
            kept = f", saved in {out / 'last.pt'}" if out else ""
        status, stop_reason = "nonfinite", f"{exc} Last good state: after epoch {epoch}{kept}."
        failure = NonFiniteError(stop_reason)
    finally:
        undo_sigterm()
        if bar is not None:
            bar.close()
    if status != "nonfinite" or _all_finite(last_good["state_dict"]):
        save("last.pt", last_good, status)
    if best["state"] is not None:
        net.load_state_dict(best["state"])
    summary: dict[str, Any] = {
        "mode": "overfit" if overfit else "full",
        "status": status,
        "stop_reason": stop_reason,
        "epochs_run": epoch,
        "model": model_name,
        "loss": loss if isinstance(loss, str) and loss else ("custom" if loss else "pairwise_rank_loss"),
        "seed": tc.seed,
        "device": str(device),
        "distributed": {"world_size": di.world_size, "backend": di.backend,
                        "batch_size_per_process": loader.batch_size} if di.enabled else None,
        "num_graphs": len(gs),
        "split_sizes": {k: len(v) for k, v in splits.items()},
        "skipped_steps": skipped_steps,
        "resumed_from": str(resume) if resume else None,
        "num_dropped_rows": len({(p.line, p.id) for p in getattr(gs, "dropped", [])}),
        "dropped_rows": [vars(p) for p in getattr(gs, "dropped", [])],
        "final": history[-1] if history else {},
        "best_epoch": best["epoch"] if val_set else epoch,
        "best_val_spearman": best["val_spearman"] if val_set else None,
        "wall_time_s": round(time.perf_counter() - t_start, 3),
        "config": config.to_dict(),
        "versions": environment_info(),
    }
    test_idx = splits.get("test", []) if failure is None else []
    if test_idx:
        summary["test"] = split_metrics(net, [gs[i] for i in test_idx], device, tie_eps)
    if with_baseline and not overfit and status == "completed":
        if tc.enable_debug_logs and main:
            logger.info("linear baseline (pooled input features -> one score) on the same splits:")
        base = train(
            config,
            graphs=gs,
            model="linear",
            out_dir=out / "baseline" if out else None,
            progress=False,
            splits=splits,
        )
        summary["baseline"] = {
            "model": "linear",
            "best_val_spearman": base.summary["best_val_spearman"],
            "test": base.summary.get("test", {}),
        }
    if out and main:
        if best["state"] is None and failure is None:
            save("best.pt", {"state_dict": cpu_clone(net.state_dict()),
                             "optimizer": optimizer.state_dict(),
                             "epoch": epoch, "metrics": history}, "best")
        write_json(out / "summary.json", summary)
    if failure is not None:
        raise failure
    return TrainResult(model=net, history=history, summary=summary, splits=splits)


def _format_record(r: dict[str, Any]) -> str:
    text = (
        f"epoch {r['epoch']:4d}  loss {r['loss']:.4f}  pair_acc {r['pairwise_accuracy']:.3f}  "
        f"spearman {r['spearman']:.3f}  score mean {r['score_mean']:.4f} std {r['score_std']:.4f}  "
        f"grad_norm {r['grad_norm']:.4f}"
    )
    if "val_spearman" in r:
        text += f"  | val pair_acc {r['val_pairwise_accuracy']:.3f} spearman {r['val_spearman']:.3f}"
    return text
