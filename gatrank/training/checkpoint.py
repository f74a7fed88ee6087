"""The checkpoint format, written and read here only.

A checkpoint (``best.pt``, ``last.pt``) is one `safetensors <https://huggingface.co/docs/
safetensors>`_ file: reading it unpickles nothing, on any torch, so a checkpoint from someone
else can be opened without trusting them. Its tensors are stored as safetensors tensors, named
by their place in the entries (``state_dict/convs.0.lin.weight``, ``optimizer/state/0/exp_avg``,
``resume/rng/torch``); everything else is JSON in the header's metadata, under ``entries``,
with a tensor standing as ``{"$tensor": name}`` (tuples, dicts with non-string keys and
non-finite floats are tagged the same way, so every entry reads back exactly as it was
written). ``format`` is ``gatrank-checkpoint`` and ``version`` :data:`FORMAT_VERSION`. The
entries:

- ``state_dict``: the bare model's weights on the CPU (no DDP ``module.`` prefix);
- ``optimizer``: the optimizer's ``state_dict``;
- ``epoch``: how many complete epochs the weights have trained;
- ``metrics``: the records logged so far (what ``metrics.jsonl`` holds);
- ``resume`` (``last.pt`` only): what an exact resume restores besides the above (see
  :class:`Progress`), plus ``elapsed_s`` (training seconds so far) and ``rng`` (every random
  state the loop draws from);
- the run it belongs to (see :class:`RunInfo`): ``config``, ``model_spec``, ``loss_spec``,
  ``model_name``, ``in_channels``, ``edge_dim``, ``splits``, ``data_fingerprint``;
- ``status``: ``best`` for ``best.pt``; ``running``, ``completed``, ``interrupted`` or
  ``nonfinite`` for ``last.pt``.

Checkpoints of gatrank 0.1 (the same entries as one :func:`torch.save` dict) are still read, with
``torch.load(weights_only=True)`` and the allowlist of :func:`gatrank.data.safe_torch_load`,
which refuses them on a torch with a known hole in that unpickler.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor, nn
from torch.utils._pytree import tree_map

from gatrank.config import Config
from gatrank.data import GraphSet, safe_torch_load
from gatrank.io import atomic_write_bytes
from gatrank.model import build_model

__all__ = [
    "FORMAT_VERSION",
    "RESUME_MAY_CHANGE",
    "Progress",
    "RunInfo",
    "Snapshot",
    "all_finite",
    "best_checkpoint",
    "checkpoint_config",
    "load_model",
    "load_resume",
    "read_checkpoint",
    "restore",
    "set_rng_state",
    "snapshot",
    "write_checkpoint",
]

FORMAT = "gatrank-checkpoint"
FORMAT_VERSION = 2
"""The version written; 1 is gatrank 0.1's :func:`torch.save` dict (read, never written)."""

# Keys a resumed run may change; every other config key must match the checkpoint, because it
# changes the trajectory (the data section is checked through the split and a data fingerprint).
RESUME_MAY_CHANGE = frozenset(
    {"epochs", "device", "enable_debug_logs", "nonfinite", "log_every", "patience", "cpu_threads"}
)


@dataclass(frozen=True)
class RunInfo:
    """The run a checkpoint belongs to: a resume checks it, an evaluation rebuilds the model
    from it."""

    config: Config
    model_spec: str
    """The model's name or import string; ``""`` for a factory or module passed in Python."""
    loss_spec: str
    """The loss's import string; ``""`` for gatrank's own, ``"custom"`` for a callable."""
    model_name: str
    in_channels: int
    splits: dict[str, list[int]]
    data_fingerprint: str
    """A hash of the ids and targets of the graphs it trained on."""
    edge_dim: int | None = None
    """The graphs' edge-feature width (``None``: no ``edge_attr``), for a model whose
    constructor takes ``edge_dim``."""

    @classmethod
    def of(
        cls, config: Config, graphs: GraphSet, splits: dict[str, list[int]], *,
        model: nn.Module | str | Callable | None, model_name: str, loss: str | Callable | None,
    ) -> RunInfo:
        """The run of ``train(config, graphs=graphs, model=model, loss=loss)``."""
        return cls(
            config=config,
            model_spec=model_name if isinstance(model, str) or model is None else "",
            loss_spec=loss if isinstance(loss, str) else "custom" if loss else "",
            model_name=model_name,
            in_channels=graphs.num_features,
            splits=splits,
            data_fingerprint=_data_fingerprint(graphs),
            edge_dim=graphs.edge_dim,
        )


@dataclass(kw_only=True)
class Progress:
    """The training loop's record of itself that ``last.pt`` keeps beside the weights: the
    logged history and the ``resume`` entry's counters."""

    history: list[dict[str, Any]] = field(default_factory=list)
    """One record per logged epoch."""
    best_epoch: int = 0
    best_val_spearman: float = -math.inf
    best_state: dict[str, Tensor] | None = None
    """The best epoch's weights, on the training device (``None`` before a validation)."""
    epochs_since_best: int = 0
    skipped_steps: int = 0
    """Non-finite steps skipped so far (``training.nonfinite: skip``)."""
    early_stopped: bool = False
    stop_reason: str = ""


@dataclass(frozen=True)
class Snapshot:
    """The training state after ``epoch`` complete epochs: ``last.pt`` less the run's entries
    (or a whole ``last.pt`` read back)."""

    epoch: int
    entries: dict[str, Any]

    @property
    def finite(self) -> bool:
        """Every floating-point weight is finite (never write NaN weights to disk)."""
        return all_finite(self.entries["state_dict"])

    @property
    def elapsed_s(self) -> float:
        return self.entries["resume"]["elapsed_s"]

    @property
    def rng(self) -> dict[str, Any]:
        return self.entries["resume"]["rng"]


def all_finite(state: dict[str, Tensor]) -> bool:
    return all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point())


def _rng_state(loader_gen: torch.Generator) -> dict[str, Any]:
    """Every random state the loop draws from, storable under ``weights_only=True``."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "loader": loader_gen.get_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], loader_gen: torch.Generator) -> None:
    """Put every random state back as :attr:`Snapshot.rng` recorded it."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    loader_gen.set_state(state["loader"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _clone_tensors(obj: Any) -> Any:
    """Copy of nested containers with every tensor cloned: ``copy.deepcopy`` without its
    per-tensor overhead (about 6x faster on an optimizer state, taken every epoch)."""
    return tree_map(lambda v: v.clone() if isinstance(v, Tensor) else v, obj)


def _cpu_clone(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


def _data_fingerprint(graphs: Sequence) -> str:
    """Hash of every graph's id and target: a resumed run must see the same data."""
    h = hashlib.sha256()
    for i, g in enumerate(graphs):
        h.update(f"{getattr(g, 'gid', i)}\0".encode())
        h.update(g.y.detach().cpu().to(torch.float64).numpy().tobytes())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------- writing


def snapshot(
    epoch: int, net: nn.Module, optimizer: torch.optim.Optimizer, progress: Progress,
    elapsed_s: float, loader_gen: torch.Generator,
) -> Snapshot:
    """Everything an exact resume needs after ``epoch`` complete epochs (copies, not views)."""
    return Snapshot(epoch, {
        "state_dict": _cpu_clone(net.state_dict()),
        "optimizer": _clone_tensors(optimizer.state_dict()),
        "epoch": epoch,
        "metrics": list(progress.history),
        "resume": {
            "best_epoch": progress.best_epoch,
            "best_val_spearman": progress.best_val_spearman,
            "best_state": progress.best_state,  # replaced, never mutated: no copy needed
            "epochs_since_best": progress.epochs_since_best,
            "skipped_steps": progress.skipped_steps,
            "early_stopped": progress.early_stopped,
            "stop_reason": progress.stop_reason,
            "elapsed_s": elapsed_s,
            "rng": _rng_state(loader_gen),
        },
    })


def best_checkpoint(
    epoch: int, net: nn.Module, optimizer: torch.optim.Optimizer, history: list[dict[str, Any]],
) -> dict[str, Any]:
    """What ``best.pt`` holds besides the run's entries: weights, not a resumable state."""
    return {"state_dict": _cpu_clone(net.state_dict()), "optimizer": optimizer.state_dict(),
            "epoch": epoch, "metrics": history}


def write_checkpoint(path: Path, entries: dict[str, Any], run: RunInfo, status: str) -> None:
    """Write ``entries`` (a :attr:`Snapshot.entries` or a :func:`best_checkpoint`) and the
    run's entries to ``path`` atomically."""
    tensors: dict[str, Tensor] = {}
    tree = _encode({
        **entries,
        "config": run.config.to_dict(),
        "model_spec": run.model_spec,
        "loss_spec": run.loss_spec,
        "model_name": run.model_name,
        "in_channels": run.in_channels,
        "edge_dim": run.edge_dim,
        "splits": run.splits,
        "data_fingerprint": run.data_fingerprint,
        "status": status,
    }, "", tensors, set())
    # strict JSON (no NaN literals): any JSON reader can read the header of a shared checkpoint
    meta = {"format": FORMAT, "version": str(FORMAT_VERSION),
            "entries": json.dumps(tree, allow_nan=False, separators=(",", ":"))}
    atomic_write_bytes(path, st_save(tensors, metadata=meta))


def _encode(obj: Any, where: str, tensors: dict[str, Tensor], storages: set[int]) -> Any:
    """``obj`` as JSON, its tensors moved into ``tensors`` under their place in the entries."""
    if isinstance(obj, Tensor):
        t = obj.detach().to("cpu").contiguous()
        if t.numel() and t.untyped_storage().data_ptr() in storages:
            t = t.clone()  # safetensors refuses overlapping views of one storage (tied weights)
        storages.add(t.untyped_storage().data_ptr())
        name = where.lstrip("/")
        while name in tensors:  # e.g. keys 0 and "0" in one dict
            name += "_"
        tensors[name] = t
        return {"$tensor": name}
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return {"$float": repr(obj)}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (list, tuple)):
        if all(type(v) is int or type(v) is str for v in obj):  # splits, the Python RNG: fast
            return list(obj) if isinstance(obj, list) else {"$tuple": list(obj)}
        items = [_encode(v, f"{where}/{i}", tensors, storages) for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else {"$tuple": items}
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("$") for k in obj):
            return {k: _encode(v, f"{where}/{k}", tensors, storages) for k, v in obj.items()}
        return {"$dict": [[_encode(k, where, tensors, storages),
                           _encode(v, f"{where}/{k}", tensors, storages)] for k, v in obj.items()]}
    raise TypeError(f"checkpoint entry {where or '/'} is a {type(obj).__name__}, which a "
                    "checkpoint cannot hold: keep to tensors, numbers, strings, None, lists, "
                    "tuples and dicts")


# --------------------------------------------------------------------------- reading


def restore(
    snap: Snapshot, net: nn.Module, optimizer: torch.optim.Optimizer, progress: Progress,
    device: torch.device,
) -> None:
    """Load a snapshot's weights, optimizer state and progress into the running objects."""
    net.load_state_dict(snap.entries["state_dict"])
    optimizer.load_state_dict(snap.entries["optimizer"])
    progress.history = list(snap.entries["metrics"])
    r = snap.entries["resume"]
    progress.best_epoch, progress.best_val_spearman = r["best_epoch"], r["best_val_spearman"]
    progress.best_state = None if r["best_state"] is None else {
        k: v.to(device) for k, v in r["best_state"].items()
    }
    progress.epochs_since_best, progress.skipped_steps = r["epochs_since_best"], r["skipped_steps"]
    progress.early_stopped, progress.stop_reason = r["early_stopped"], r["stop_reason"]


def _decode(obj: Any, tensors: dict[str, Tensor]) -> Any:
    """The inverse of :func:`_encode`."""
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if len(obj) == 1:
        ((tag, val),) = obj.items()
        if tag == "$tensor":
            return tensors[val]
        if tag == "$float":
            return float(val)
        if tag == "$tuple":
            return tuple(_decode(v, tensors) for v in val)
        if tag == "$dict":
            return {_decode(k, tensors): _decode(v, tensors) for k, v in val}
    return {k: _decode(v, tensors) for k, v in obj.items()}


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Every entry of a gatrank checkpoint, as it was written (tensors on the CPU).

    A safetensors checkpoint is read without unpickling anything; a gatrank 0.1 ``torch.save``
    checkpoint goes through :func:`gatrank.data.safe_torch_load` (``weights_only=True`` and the
    allowlist; refused on a torch older than 2.10). Raises ``ValueError`` for a file that is
    neither, or a damaged one.
    """
    data = Path(path).read_bytes()
    # safetensors: an 8-byte header length, then the JSON header; torch.save files start with a
    # zip or a pickle signature, whose 9th byte is never "{"
    if data[8:9] != b"{":
        return safe_torch_load(path)  # type: ignore[return-value]
    damaged = (SafetensorError, KeyError, TypeError, ValueError, RecursionError)
    try:
        header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])
        meta = header.get("__metadata__") or {}
    except (*damaged, AttributeError) as exc:
        raise _damaged(path, exc) from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a gatrank checkpoint (a safetensors file without "
                         f"format={FORMAT!r} in its metadata)")
    if not str(meta.get("version")).isdigit() or int(meta["version"]) > FORMAT_VERSION:
        raise ValueError(f"{path} is a checkpoint of format version {meta.get('version')!r}; "
                         f"this gatrank reads versions up to {FORMAT_VERSION}: upgrade gatrank")
    try:
        with warnings.catch_warnings():
            # st_load's tensors are views of ``data`` (read-only bytes): cloned here
            warnings.filterwarnings("ignore", message="The given buffer is not writable")
            tensors = {k: v.clone() for k, v in st_load(data).items()}
        return _decode(json.loads(meta["entries"]), tensors)
    except damaged as exc:
        raise _damaged(path, exc) from None


def _damaged(path: str | Path, exc: BaseException) -> ValueError:
    return ValueError(f"{path} is a damaged gatrank checkpoint ({type(exc).__name__}: {exc}); "
                      "copy it again, or use the run's other checkpoint")


def _read(path: str | Path, entry: str) -> dict[str, Any]:
    ckpt = read_checkpoint(path)
    if not isinstance(ckpt, dict) or entry not in ckpt:
        raise ValueError(f"{path} is not a gatrank checkpoint (no {entry!r} entry)")
    return ckpt


def _config(ckpt: dict[str, Any], path: str | Path) -> Config:
    return Config.from_dict(ckpt["config"], source=f"{path}:config")


def checkpoint_config(path: str | Path) -> tuple[Config, dict[str, str]]:
    """The config, and the model and loss import strings, stored in a gatrank checkpoint.

    Read with ``weights_only``. Returns ``(config, {"model": spec, "loss": spec})``; a spec is
    ``""`` for gatrank's own and ``"custom"`` for a callable passed in Python.
    ``--resume`` uses this so ``gatrank train --resume run/last.pt`` needs no other flag.
    """
    ckpt = _read(path, "config")
    specs = {"model": ckpt.get("model_spec", ""), "loss": ckpt.get("loss_spec", "")}
    return _config(ckpt, path), specs


def load_model(path: str | Path, *, model: str = "", model_kwargs: dict[str, Any] | None = None
               ) -> tuple[nn.Module, Config, dict]:
    """The model saved in a checkpoint, rebuilt in eval mode, with its config and the raw
    checkpoint dict (see :func:`gatrank.evaluate.load_checkpoint`)."""
    ckpt = _read(path, "state_dict")
    config = _config(ckpt, path)
    if model_kwargs is not None:
        config = config.updated({"model.kwargs": model_kwargs})
    spec = model or ckpt.get("model_spec", "") or "gat"
    if spec not in ("gat", "linear") and ":" not in spec:
        raise ValueError(
            f"{path} was trained with a custom model ({spec!r}); pass its import string with "
            "--model"
        )
    net = build_model(int(ckpt["in_channels"]), config.model, spec,
                      edge_dim=ckpt.get("edge_dim"))
    net.load_state_dict(ckpt["state_dict"])
    net.eval()
    return net, config, ckpt


def load_resume(path: str | Path, run: RunInfo) -> Snapshot:
    """Read a ``last.pt`` and check it belongs to ``run``; errors say what differs."""
    ckpt = read_checkpoint(path)
    if not isinstance(ckpt, dict) or "resume" not in ckpt:
        raise ValueError(
            f"{path} cannot be resumed: it holds no training state (a best.pt holds only the "
            "best weights); resume from the run's last.pt"
        )
    theirs, ours = ckpt["config"], run.config.to_dict()
    changed = [
        f"{sec}.{key}: {theirs[sec].get(key)!r} -> {val!r}"
        for sec in ("model", "loss", "training")
        for key, val in ours[sec].items()
        if theirs[sec].get(key) != val and not (sec == "training" and key in RESUME_MAY_CHANGE)
    ]
    if changed:
        raise ValueError(
            f"cannot resume from {path}: the config differs from the checkpoint's in "
            f"{'; '.join(changed)}. Resume with the same config (only training."
            f"{', training.'.join(sorted(RESUME_MAY_CHANGE))} may change), or start a new run"
        )
    if ckpt.get("model_name", run.model_name) != run.model_name:
        raise ValueError(
            f"cannot resume from {path}: it trained model {ckpt['model_name']!r}, not "
            f"{run.model_name!r}; pass the same --model"
        )
    if ckpt.get("loss_spec", run.loss_spec) != run.loss_spec:
        raise ValueError(
            f"cannot resume from {path}: it trained with loss {ckpt['loss_spec'] or 'built-in'!r}"
            f", not {run.loss_spec or 'built-in'!r}; pass the same --loss"
        )
    if (
        ckpt.get("data_fingerprint") != run.data_fingerprint
        or ckpt["in_channels"] != run.in_channels
        or {k: list(v) for k, v in ckpt["splits"].items()}
        != {k: list(v) for k, v in run.splits.items()}
    ):
        raise ValueError(
            f"cannot resume from {path}: the graphs (ids, targets, features or splits) differ "
            "from the ones it trained on; use the same manifest and data settings"
        )
    return Snapshot(ckpt["epoch"], ckpt)
