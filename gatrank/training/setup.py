"""Setting up a training run: the device and processes, graphs and splits, the model, loss and
optimizer, the training batches (one process or DDP), and the graphs scored every epoch.

The order of the steps is part of the result: each draws from the seeded RNGs (model init, a
DataLoader's first iteration), so a reordering changes the trajectory of every run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler
from torch_geometric.loader import DataLoader

import gatrank.training.distributed as dist_
from gatrank.config import Config, TrainingConfig
from gatrank.data import GraphSet, split_indices
from gatrank.datasets import load_data
from gatrank.losses import LossFn, make_loss_fn
from gatrank.model import GATRanker, LinearBaseline, adapt_forward, build_model
from gatrank.runtime import resolve_device, set_seed
from gatrank.training.checkpoint import RunInfo, write_checkpoint
from gatrank.training.dropout import DropoutOff
from gatrank.training.scoring import COLLATE_ONCE_MAX, Collated, collate

__all__ = ["Setup", "set_up", "CHECKPOINTS"]

logger = logging.getLogger(__name__)

CHECKPOINTS = frozenset({"best.pt", "last.pt"})
"""The checkpoints a run with an output folder writes: ``best.pt`` (the weights to evaluate)
and ``last.pt`` (everything ``--resume`` needs)."""


@dataclass
class Setup:
    """What a training run trains with; built once by :func:`set_up`, not changed after."""

    config: Config
    device: torch.device
    di: dist_.DistInfo
    graphs: GraphSet
    splits: dict[str, list[int]]
    train_set: list
    val_set: list
    net: nn.Module
    """The bare model (what checkpoints hold)."""
    train_net: nn.Module
    """What the training step calls: ``net``, or its DDP wrapper under torchrun."""
    loss_fn: LossFn
    optimizer: torch.optim.Optimizer
    loader_gen: torch.Generator
    """The one-process loader's shuffling generator (its state goes into ``last.pt``)."""
    sampler: DistributedSampler | None
    loader: DataLoader
    fixed_batches: Collated | None
    """The training batches collated once, when every epoch yields the same ones."""
    val_batches: Collated
    train_eval: Sequence
    """The training graphs as the per-epoch record scores them (collated once when small)."""
    run: RunInfo
    out: Path | None
    checkpoints: frozenset[str] = CHECKPOINTS
    """The checkpoint files this run writes into ``out`` (a subset of :data:`CHECKPOINTS`)."""
    dropout_off: DropoutOff | None = None
    """Overfit mode: switches off the model's own dropout in each training forward pass and
    records what it switched off (``model.dropout`` reaches gatrank's GAT only)."""

    @property
    def tc(self) -> TrainingConfig:
        return self.config.training

    @property
    def main(self) -> bool:
        """This process writes files, logs and calls callbacks (rank 0)."""
        return self.di.is_main

    @property
    def overfit(self) -> bool:
        return self.tc.overfit_n > 0

    @property
    def tie_eps(self) -> float:
        return self.config.loss.tie_eps

    def save(self, name: str, entries: dict[str, Any], status: str) -> None:
        """Write checkpoint ``name`` into the output folder (rank 0, with an output folder,
        when the run keeps that checkpoint)."""
        if self.out and self.main and name in self.checkpoints:
            write_checkpoint(self.out / name, entries, self.run, status)


def set_up(
    config: Config,
    *,
    graphs: GraphSet | None,
    model: nn.Module | str | Callable | None,
    loss: str | Callable | None,
    splits: dict[str, list[int]] | None,
    out_dir: str | Path | None,
    checkpoints: Sequence[str] = tuple(CHECKPOINTS),
) -> Setup:
    """Everything :func:`gatrank.training.train` needs before its first epoch (see its
    arguments); joins the torchrun process group when launched by torchrun.

    Raises:
        ValueError: a checkpoint name outside :data:`CHECKPOINTS`.
    """
    unknown = sorted(set(checkpoints) - CHECKPOINTS)
    if unknown:
        raise ValueError(f"unknown checkpoint(s) {unknown}: a run writes {sorted(CHECKPOINTS)} "
                         "or a subset of them")
    tc = config.training
    set_seed(tc.seed)
    device = resolve_device(tc.device)
    di = dist_.setup(device)  # a no-op unless launched by torchrun
    device = dist_.process_device(device, di)
    gs = _load_graphs(config, graphs, di)
    splits = _splits(config, gs) if splits is None else splits
    train_set = [gs[i] for i in splits["train"]]
    val_set = [gs[i] for i in splits.get("val", [])]
    if tc.overfit_n > len(gs):
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
    net, model_name = _resolve_model(model, gs, config)
    net = net.to(device)
    loss_fn = make_loss_fn(loss, config)
    optimizer = torch.optim.Adam(
        [p for p in net.parameters() if p.requires_grad],
        lr=tc.learning_rate,
        weight_decay=tc.weight_decay,
    )
    loader_gen = torch.Generator().manual_seed(tc.seed)
    sampler, loader, train_net = _training_batches(tc, train_set, net, device, di, loader_gen)
    val_batches = collate(val_set, device)  # evaluated every epoch: collate once
    small = len(train_set) <= COLLATE_ONCE_MAX  # a second, collated copy of it is affordable
    # an unshuffled one-process loader yields the same batches every epoch (the overfit test):
    # collate them once instead of once per epoch
    fixed_batches = (Collated(b.to(device) for b in loader)
                     if sampler is None and tc.overfit_n > 0 and small else None)
    # the training graphs are scored at every logged epoch: collate them once too (the fixed
    # batches already hold them, in order)
    train_eval = fixed_batches or (collate(train_set, device) if small else train_set)
    return Setup(
        config=config, device=device, di=di, graphs=gs, splits=splits, train_set=train_set,
        val_set=val_set, net=net, train_net=train_net, loss_fn=loss_fn, optimizer=optimizer,
        loader_gen=loader_gen, sampler=sampler, loader=loader, fixed_batches=fixed_batches,
        val_batches=val_batches, train_eval=train_eval,
        run=RunInfo.of(config, gs, splits, model=model, model_name=model_name, loss=loss),
        out=Path(out_dir) if out_dir else None, checkpoints=frozenset(checkpoints),
        dropout_off=DropoutOff(net) if tc.overfit_n > 0 else None,
    )


def _load_graphs(config: Config, graphs: GraphSet | None, di: dist_.DistInfo) -> GraphSet:
    if di.enabled and not di.is_main:
        dist_.barrier()  # rank 0 loads first and fills the SMILES cache; the others read it
    if graphs is None:
        graphs = load_data(config.data)
    if di.enabled and di.is_main:
        dist_.barrier()
    return graphs


def _splits(config: Config, gs: GraphSet) -> dict[str, list[int]]:
    """Overfit mode: the first ``overfit_n`` graphs; else the manifest's or a seeded split."""
    tc = config.training
    if tc.overfit_n > 0:
        n = min(tc.overfit_n, len(gs))
        return {"train": list(range(n)), "val": [], "test": []}
    return split_indices(
        gs,
        seed=tc.seed,
        val_fraction=config.data.val_fraction,
        test_fraction=config.data.test_fraction,
    )


def _resolve_model(model, gs: GraphSet, config: Config) -> tuple[nn.Module, str]:
    """The model and its name; a PyG-style ``forward(x, edge_index, ...)`` is called by name
    (:func:`gatrank.model.adapt_forward`). A module instance is used as it is. A class or
    factory goes through :func:`~gatrank.model.build_model` as its import string would
    (``in_channels``, ``out_channels``, ``edge_dim`` filled in where it names them,
    ``model.kwargs`` applied, missing arguments named), except that a factory taking nothing
    but what gatrank fills in (``factory(in_channels)``, a lambda) builds its model itself and
    gets no ``model.kwargs``."""
    if isinstance(model, nn.Module):
        return adapt_forward(model), type(model).__name__
    if callable(model) and not isinstance(model, str):
        return (build_model(gs.num_features, config.model, model, edge_dim=gs.edge_dim),
                getattr(model, "__name__", type(model).__name__))
    spec = model or ""
    return build_model(gs.num_features, config.model, spec, edge_dim=gs.edge_dim), spec or "gat"


def _training_batches(
    tc: TrainingConfig, train_set: list, net: nn.Module, device: torch.device,
    di: dist_.DistInfo, loader_gen: torch.Generator,
) -> tuple[DistributedSampler | None, DataLoader, nn.Module]:
    """The training loader, its DDP sampler and the DDP-wrapped model under torchrun;
    ``(None, loader, net)`` in one process."""
    overfit = tc.overfit_n > 0
    if not di.enabled:
        loader = DataLoader(
            train_set,
            batch_size=min(tc.batch_size, len(train_set)),
            shuffle=not overfit,
            generator=loader_gen,
            drop_last=False,
        )
        return None, loader, net
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
    return sampler, loader, train_net
