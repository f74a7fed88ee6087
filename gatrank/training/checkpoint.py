"""The checkpoint format: what ``best.pt`` and ``last.pt`` hold, and the checks on reading one."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils._pytree import tree_map

from gatrank.config import Config
from gatrank.data import safe_torch_load

__all__ = [
    "RESUME_MAY_CHANGE",
    "checkpoint_config",
    "clone_tensors",
    "cpu_clone",
    "data_fingerprint",
    "load_resume",
    "rng_state",
    "set_rng_state",
]

# Keys a resumed run may change; every other config key must match the checkpoint, because it
# changes the trajectory (the data section is checked through the split and a data fingerprint).
RESUME_MAY_CHANGE = frozenset(
    {"epochs", "device", "enable_debug_logs", "nonfinite", "log_every", "patience", "cpu_threads"}
)


def rng_state(loader_gen: torch.Generator) -> dict[str, Any]:
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
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    loader_gen.set_state(state["loader"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def clone_tensors(obj: Any) -> Any:
    """Copy of nested containers with every tensor cloned: ``copy.deepcopy`` without its
    per-tensor overhead (about 6x faster on an optimizer state, taken every epoch)."""
    return tree_map(lambda v: v.clone() if isinstance(v, Tensor) else v, obj)


def cpu_clone(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


def data_fingerprint(graphs: Sequence) -> str:
    """Hash of every graph's id and target: a resumed run must see the same data."""
    h = hashlib.sha256()
    for i, g in enumerate(graphs):
        h.update(f"{getattr(g, 'gid', i)}\0".encode())
        h.update(g.y.detach().cpu().to(torch.float64).numpy().tobytes())
    return h.hexdigest()[:16]


def checkpoint_config(path: str | Path) -> tuple[Config, dict[str, str]]:
    """The config, and the model and loss import strings, stored in a gatrank checkpoint.

    Read with ``weights_only``. Returns ``(config, {"model": spec, "loss": spec})``; a spec is
    ``""`` for gatrank's own and ``"custom"`` for a callable passed in Python.
    ``--resume`` uses this so ``gatrank train --resume run/last.pt`` needs no other flag.
    """
    ckpt = safe_torch_load(path)
    if not isinstance(ckpt, dict) or "config" not in ckpt:
        raise ValueError(f"{path} is not a gatrank checkpoint (no 'config' entry)")
    specs = {"model": ckpt.get("model_spec", ""), "loss": ckpt.get("loss_spec", "")}
    return Config.from_dict(ckpt["config"], source=f"{path}:config"), specs


def load_resume(
    path: str | Path, config: Config, splits: dict, in_channels: int, fingerprint: str,
    model_name: str, loss_spec: str,
) -> dict[str, Any]:
    """Read a ``last.pt`` and check it belongs to this run; errors say what differs."""
    ckpt = safe_torch_load(path)
    if not isinstance(ckpt, dict) or "resume" not in ckpt:
        raise ValueError(
            f"{path} cannot be resumed: it holds no training state (a best.pt holds only the "
            "best weights); resume from the run's last.pt"
        )
    theirs, ours = ckpt["config"], config.to_dict()
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
    if ckpt.get("model_name", model_name) != model_name:
        raise ValueError(
            f"cannot resume from {path}: it trained model {ckpt['model_name']!r}, not "
            f"{model_name!r}; pass the same --model"
        )
    if ckpt.get("loss_spec", loss_spec) != loss_spec:
        raise ValueError(
            f"cannot resume from {path}: it trained with loss {ckpt['loss_spec'] or 'built-in'!r}"
            f", not {loss_spec or 'built-in'!r}; pass the same --loss"
        )
    if (
        ckpt.get("data_fingerprint") != fingerprint
        or ckpt["in_channels"] != in_channels
        or {k: list(v) for k, v in ckpt["splits"].items()}
        != {k: list(v) for k, v in splits.items()}
    ):
        raise ValueError(
            f"cannot resume from {path}: the graphs (ids, targets, features or splits) differ "
            "from the ones it trained on; use the same manifest and data settings"
        )
    return ckpt
