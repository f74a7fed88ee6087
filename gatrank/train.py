"""One training loop for both of the runbook's modes.

- Overfit mode (``training.overfit_n > 0``): the first N graphs, no validation split, and the
  runbook's settings (see :func:`gatrank.config.overfit_config`). It answers "can this model
  learn at all?".
- Full training: train/val/test split, best checkpoint by validation Spearman, early stopping.

Every ``log_every`` epochs (and at the first and last epoch) one record is logged and, with an
output folder, appended to ``metrics.jsonl``: loss, pairwise accuracy, Spearman, score mean/std,
gradient norm (total and per layer), pooled-embedding spread, valid pairs per batch and, in full
training, the same metrics on the validation split.
"""

from __future__ import annotations

import logging
import math
import platform
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch_geometric.loader import DataLoader

from gatrank import __version__
from gatrank.config import Config
from gatrank.diagnostics import embedding_stats, grad_norms
from gatrank.io import append_jsonl, atomic_torch_save, write_json
from gatrank.losses import LossOutput, pairwise_rank_loss, valid_pair_mask
from gatrank.metrics import ranking_metrics
from gatrank.model import build_model
from gatrank.plugins import load_object

__all__ = [
    "NonFiniteError",
    "TrainResult",
    "LossFn",
    "make_loss_fn",
    "resolve_device",
    "set_seed",
    "predict",
    "train",
    "environment_info",
]

logger = logging.getLogger(__name__)

LossFn = Callable[[Tensor, Tensor, "Tensor | None"], LossOutput]


class NonFiniteError(RuntimeError):
    """The loss or gradient norm became NaN/Inf and ``training.nonfinite`` is ``stop``."""


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


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch so a CPU run is repeatable."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"training.device={name!r} but CUDA is not available here; use 'auto'")
    return torch.device(name)


def environment_info() -> dict[str, str]:
    """Versions stored in every run summary, for reproducibility."""
    import scipy
    import torch_geometric

    return {
        "gatrank": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_geometric": torch_geometric.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "platform": platform.platform(),
    }


def make_loss_fn(loss: str | Callable | None, config: Config) -> LossFn:
    """Adapt the configured loss to ``fn(scores, targets, group) -> LossOutput``.

    ``None``/empty gives gatrank's pairwise loss with the ``loss`` section's settings. An import
    string or callable is a user loss ``(scores, targets) -> scalar``; its valid-pair count is
    computed with the configured eps so batches without pairs are still visible.
    """
    lc = config.loss
    if not loss:
        def builtin(scores: Tensor, targets: Tensor, group: Tensor | None) -> LossOutput:
            return pairwise_rank_loss(
                scores,
                targets,
                margin_eps=lc.margin_eps,
                tie_eps=lc.tie_eps,
                temperature=lc.temperature,
                weight_by_diff=lc.weight_by_diff,
                group=group,
            )

        return builtin
    user = load_object(loss, what="loss") if isinstance(loss, str) else loss

    def wrapped(scores: Tensor, targets: Tensor, group: Tensor | None) -> LossOutput:
        out = user(scores, targets)
        if isinstance(out, LossOutput):
            return out
        if not isinstance(out, Tensor) or out.numel() != 1:
            raise TypeError(
                f"loss {loss!r} must return a scalar tensor, got "
                f"{type(out).__name__}{tuple(out.shape) if isinstance(out, Tensor) else ''}"
            )
        pairs = int(
            valid_pair_mask(targets, margin_eps=lc.margin_eps, tie_eps=lc.tie_eps, group=group).sum()
        )
        return LossOutput(loss=out.reshape(()), num_pairs=pairs)

    return wrapped


def _batch_group(batch) -> Tensor | None:
    group = getattr(batch, "group", None)
    if group is None or bool((group < 0).all()):
        return None
    return group


@torch.no_grad()
def predict(model: nn.Module, graphs: Sequence, device: torch.device, batch_size: int = 256) -> dict:
    """Scores for ``graphs`` in eval mode: ``{"scores", "targets", "embeddings"}`` as tensors.

    ``embeddings`` is the pooled graph embedding when the model has an ``embed`` method (the
    runbook's Step 2C hook), else ``None``.
    """
    model.eval()
    scores, targets, embs = [], [], []
    has_embed = callable(getattr(model, "embed", None))
    for batch in DataLoader(list(graphs), batch_size=batch_size, shuffle=False):
        batch = batch.to(device)
        s = model(batch)
        if has_embed:
            embs.append(model.embed(batch).float().cpu())
        scores.append(s.reshape(-1).float().cpu())
        targets.append(batch.y.reshape(-1).float().cpu())
    return {
        "scores": torch.cat(scores) if scores else torch.zeros(0),
        "targets": torch.cat(targets) if targets else torch.zeros(0),
        "embeddings": torch.cat(embs) if embs else None,
    }


def _evaluate(model, graphs, device, tie_eps: float, prefix: str = "") -> dict[str, float]:
    out = predict(model, graphs, device)
    metrics = ranking_metrics(out["scores"], out["targets"], tie_eps=tie_eps)
    if out["embeddings"] is not None:
        metrics.update(embedding_stats(out["embeddings"]))
    return {f"{prefix}{k}": v for k, v in metrics.items()}


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
    from gatrank.datasets import default_manifest

    manifest = config.data.manifest or default_manifest()
    return load_graphs(
        manifest, on_error=config.data.on_error, allow_outside_root=config.data.allow_outside_root
    )


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
            returns a dict merged into the record (see :mod:`gatrank.diagnostics`). They run
            after the epoch's last optimizer step, so gradients of that step are still there.

    Raises:
        NonFiniteError: a NaN/Inf loss or gradient with ``training.nonfinite == "stop"``; the
            message names the epoch and batch, and the last good checkpoint is kept.
    """
    tc = config.training
    t_start = time.perf_counter()
    set_seed(tc.seed)
    device = resolve_device(tc.device)
    gs = _load_graphs(config, graphs)
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
    loader = DataLoader(
        train_set,
        batch_size=min(tc.batch_size, len(train_set)),
        shuffle=not overfit,
        generator=loader_gen,
        drop_last=False,
    )
    out = Path(out_dir) if out_dir else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.jsonl").write_text("")
    history: list[dict[str, Any]] = []
    best = {"epoch": 0, "val_spearman": -math.inf, "state": None}
    skipped_steps = 0
    status = "completed"
    stop_reason = ""
    epochs_since_best = 0
    tie_eps = config.loss.tie_eps

    def checkpoint(name: str, epoch: int) -> None:
        if out:
            atomic_torch_save(
                out / name,
                {
                    "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
                    "optimizer": optimizer.state_dict(),
                    "config": config.to_dict(),
                    "model_spec": model_name if isinstance(model, str) or model is None else "",
                    "in_channels": gs.num_features,
                    "epoch": epoch,
                    "metrics": history,
                    "splits": splits,
                },
            )

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=tc.epochs, desc="overfit" if overfit else "train", unit="epoch", leave=False)
    epoch = 0
    try:
        for epoch in range(1, tc.epochs + 1):
            net.train()
            losses, pairs, norms = [], [], []
            per_layer: dict[str, float] = {}
            for b_idx, batch in enumerate(loader):
                batch = batch.to(device)
                optimizer.zero_grad(set_to_none=True)
                scores = net(batch).reshape(-1)
                lo = loss_fn(scores, batch.y.reshape(-1), _batch_group(batch))
                loss_val = float(lo.loss.detach())
                if lo.loss.requires_grad:
                    lo.loss.backward()
                total, per_layer = grad_norms(net)
                if not (math.isfinite(loss_val) and math.isfinite(total)):
                    msg = (
                        f"non-finite {'loss' if not math.isfinite(loss_val) else 'gradient norm'} "
                        f"at epoch {epoch}, batch {b_idx} (loss={loss_val}, grad_norm={total})"
                    )
                    if tc.nonfinite == "stop":
                        raise NonFiniteError(
                            msg + "; stopped. The last good checkpoint is kept. Lower "
                            "training.learning_rate, keep training.grad_clip on, and check the "
                            "data for NaN/Inf (gatrank check-data)."
                        )
                    skipped_steps += 1
                    logger.warning("%s; step skipped (training.nonfinite=skip)", msg)
                    continue
                if tc.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(net.parameters(), tc.grad_clip)
                optimizer.step()
                losses.append(loss_val)
                pairs.append(lo.num_pairs)
                norms.append(total)
            train_loss = float(np.mean(losses)) if losses else float("nan")
            val_metrics: dict[str, float] = {}
            if val_set:
                val_metrics = _evaluate(net, val_set, device, tie_eps, prefix="val_")
                if val_metrics["val_spearman"] > best["val_spearman"]:
                    best = {
                        "epoch": epoch,
                        "val_spearman": val_metrics["val_spearman"],
                        "state": {k: v.detach().clone() for k, v in net.state_dict().items()},
                    }
                    epochs_since_best = 0
                    checkpoint("best.pt", epoch)
                else:
                    epochs_since_best += 1
            log_now = epoch == 1 or epoch % tc.log_every == 0 or epoch == tc.epochs
            early = bool(val_set) and tc.patience > 0 and epochs_since_best >= tc.patience
            if log_now or early:
                record = {
                    "epoch": epoch,
                    "loss": train_loss,
                    **_evaluate(net, train_set, device, tie_eps),
                    "grad_norm": float(np.mean(norms)) if norms else 0.0,
                    "grad_norm_per_layer": per_layer,
                    "valid_pairs_mean": float(np.mean(pairs)) if pairs else 0.0,
                    "valid_pairs_min": int(min(pairs)) if pairs else 0,
                    "batches_without_pairs": int(sum(p == 0 for p in pairs)),
                    "skipped_steps": skipped_steps,
                    "lr": optimizer.param_groups[0]["lr"],
                    "time_s": round(time.perf_counter() - t_start, 3),
                    **val_metrics,
                }
                for probe in probes:
                    record.update(probe(net, train_set, device))
                history.append(record)
                if out:
                    append_jsonl(out / "metrics.jsonl", [record])
                if tc.enable_debug_logs:
                    logger.info(_format_record(record))
                for cb in callbacks:
                    cb(record)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{train_loss:.4f}")
            if early:
                stop_reason = f"early stop: no better validation Spearman for {tc.patience} epochs"
                break
    except KeyboardInterrupt:
        status = "interrupted"
        stop_reason = f"interrupted at epoch {epoch}"
        logger.warning("training interrupted at epoch %d; saving last.pt", epoch)
    finally:
        if bar is not None:
            bar.close()
    checkpoint("last.pt", epoch)
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
        "num_graphs": len(gs),
        "split_sizes": {k: len(v) for k, v in splits.items()},
        "skipped_steps": skipped_steps,
        "dropped_rows": [vars(p) for p in getattr(gs, "dropped", [])],
        "final": history[-1] if history else {},
        "best_epoch": best["epoch"] if val_set else epoch,
        "best_val_spearman": best["val_spearman"] if val_set else None,
        "wall_time_s": round(time.perf_counter() - t_start, 3),
        "config": config.to_dict(),
        "versions": environment_info(),
    }
    test_idx = splits.get("test", [])
    if test_idx:
        summary["test"] = _evaluate(net, [gs[i] for i in test_idx], device, tie_eps)
    if with_baseline and not overfit:
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
    if out:
        if best["state"] is None:
            checkpoint("best.pt", epoch)
        write_json(out / "summary.json", summary)
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
