"""Multi-process (distributed data-parallel) training under ``torchrun``.

``torchrun --nproc-per-node 2 -m gatrank train ...`` starts one process per rank with
``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR``/``MASTER_PORT`` in the environment;
:func:`setup` sees them and joins the process group (gloo on CPU, NCCL on CUDA). Without them
(a plain ``gatrank train``) everything here is a no-op and training runs in one process.

Conventions of a distributed run (see :func:`gatrank.training.train`):

- ``training.batch_size`` is the *global* batch: each of the W processes takes
  ``batch_size // W`` graphs per step from a :class:`~torch.utils.data.DistributedSampler`
  (seeded by ``training.seed``, reshuffled every epoch), so one optimizer step still sees about
  ``batch_size`` graphs and the learning rate keeps its meaning. Pairs form within a process's
  share of the batch, so a W-process run is close to, not identical with, a one-process run.
- Gradients are averaged across processes by :class:`~torch.nn.parallel.DistributedDataParallel`;
  every process evaluates the same validation graphs with the same weights, so early stopping and
  the best epoch agree without extra communication.
- Only rank 0 writes ``metrics.jsonl``, ``summary.json`` and checkpoints, shows the progress bar
  and prints.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "launched_by_torchrun", "setup", "info", "process_device", "is_main",
           "barrier", "all_reduce_sum", "any_flag", "teardown"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a (possibly one-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def enabled(self) -> bool:
        """True when more than one process trains together."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and prints."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer; torchrun sets "
                         "it, so unset it or launch with torchrun") from None


def launched_by_torchrun() -> bool:
    """``WORLD_SIZE`` > 1 in the environment (torchrun, or another launcher that sets it)."""
    return _env_int("WORLD_SIZE", 1) > 1


def info() -> DistInfo:
    """This process's rank and world size (rank 0 of 1 when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0),
                        str(dist.get_backend()))
    return DistInfo()


def setup(device: torch.device) -> DistInfo:
    """Join the process group torchrun describes; a no-op in a one-process run.

    Args:
        device: the device this process trains on; ``cuda`` selects NCCL and pins this process
            to GPU ``LOCAL_RANK``, anything else selects gloo.

    Returns:
        This process's :class:`DistInfo` (``world_size == 1`` when not launched by torchrun).
    """
    if not launched_by_torchrun():
        return DistInfo()
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    local_rank = _env_int("LOCAL_RANK", 0)
    if dist.is_initialized():
        return info()
    for key in ("MASTER_ADDR", "MASTER_PORT", "RANK"):
        if key not in os.environ:
            raise RuntimeError(f"WORLD_SIZE > 1 but {key} is not set: launch with torchrun "
                               "(torchrun --nproc-per-node N -m gatrank train ...)")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend)
    out = info()
    logger.info("distributed training: rank %d of %d (%s)", out.rank, out.world_size, backend)
    return out


def process_device(device: torch.device, di: DistInfo) -> torch.device:
    """The device of this rank: ``cuda:LOCAL_RANK`` for CUDA runs, else ``device``."""
    if di.enabled and device.type == "cuda":
        return torch.device("cuda", di.local_rank)
    return device


def is_main() -> bool:
    """True in rank 0, and in every one-process run."""
    return info().is_main


def barrier() -> None:
    """Wait for every process (no-op when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum of ``values`` over all processes (identity when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def any_flag(flag: bool, device: torch.device) -> bool:
    """True if ``flag`` is true in any process, so all take the same branch."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    return all_reduce_sum([1.0 if flag else 0.0], device)[0] > 0


def teardown() -> None:
    """Leave the process group if this module joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
