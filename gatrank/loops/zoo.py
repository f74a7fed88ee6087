"""The loop zoo: users' own training loops with a :class:`gatrank.Monitor` in them: each loop
bug of a public bug report written the way users write it, and healthy loops beside them.

The fault zoo (:mod:`gatrank.doctor.faults`) breaks gatrank's training; here the loop is the
user's. A :class:`LoopCase` holds a function that *is* the loop, line for line as a user writes
it (optimizer, scheduler and Monitor built inside, the bug in place with a comment naming it).
A fault names the cause id the doctor must give and phrases of its evidence; a healthy loop
gets no cause on any seed. :func:`run_loop` builds what every loop shares (32 graphs of the
embedded default data, a small PyG GAT, a shuffling loader of batch 8: 4 steps per epoch,
gatrank's pairwise loss), runs the loop and diagnoses it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.lr_scheduler import CosineAnnealingLR, LambdaLR, OneCycleLR, StepLR
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader
from torch_geometric.nn import GATConv, global_mean_pool

from gatrank import Monitor
from gatrank.doctor.report import CAUSES
from gatrank.losses import pairwise_rank_loss

__all__ = ["GAT", "LoopSetup", "LoopCase", "LOOP_FAULTS", "HEALTHY_LOOPS", "rank_loss"]

class GAT(nn.Module):
    """A small GAT the way a user writes one: two GATConv layers with ReLU, mean readout, one
    Linear to a score; with ``column`` not squeezed, as many users' regression heads.

    Shapes:
        forward(data): ``[G]`` (``[G, 1]`` with ``column``), one score per graph.
    """

    def __init__(self, in_channels: int, hidden: int = 64, heads: int = 4,
                 column: bool = False) -> None:
        super().__init__()
        self.conv1 = GATConv(in_channels, hidden, heads=heads)   # -> [N, hidden * heads]
        self.conv2 = GATConv(hidden * heads, hidden, heads=1)    # -> [N, hidden]
        self.lin = nn.Linear(hidden, 1)
        self.column = column

    def forward(self, data: Data) -> Tensor:
        x = F.relu(self.conv1(data.x, data.edge_index))
        x = F.relu(self.conv2(x, data.edge_index))
        out = self.lin(global_mean_pool(x, data.batch))          # [G, hidden] -> [G, 1]
        return out if self.column else out.squeeze(-1)


def rank_loss(scores: Tensor, y: Tensor) -> Tensor:
    """gatrank's pairwise loss as a user's ``loss_fn``: scores ``[G]``, targets ``[G]``."""
    return pairwise_rank_loss(scores, y).loss


@dataclass(frozen=True)
class LoopSetup:
    """What a loop starts from; the loop builds its optimizer, scheduler and Monitor itself."""

    model: nn.Module
    graphs: list[Data]
    """The training graphs, each with a float ``y`` ``[1]``."""
    loader: DataLoader
    """``DataLoader(graphs, batch_size=8, shuffle=True)``, seeded: 4 batches per epoch."""
    loss_fn: Callable[[Tensor, Tensor], Tensor]
    epochs: int
    out_dir: Path | None


Loop = Callable[[LoopSetup], Monitor]
"""A user's training loop: it trains ``setup.model`` and returns the Monitor it attached."""


@dataclass(frozen=True)
class LoopCase:
    """One loop of the zoo.

    Attributes:
        name: the case's name.
        source: the public report the loop comes from (``owner/repo#issue``), or the pattern.
        expect: the cause id the doctor must name among its first two; None for a healthy loop.
        loop: the function that is the user's loop.
        words: phrases the expected cause's evidence must contain (faults only).
        status: the verdicts acceptable for a healthy loop.
        epochs: how many epochs the loop runs.
        model: builds the model from the number of node features.
    """

    name: str
    source: str
    expect: str | None
    loop: Loop
    words: tuple[str, ...] = ()
    status: tuple[str, ...] = ("healthy",)
    epochs: int = 120
    model: Callable[[int], nn.Module] = GAT

    def __post_init__(self) -> None:
        if self.expect is not None and self.expect not in CAUSES:
            raise ValueError(f"loop case {self.name!r}: expect={self.expect!r} is no cause id "
                             "of gatrank.doctor.report.CAUSES; use one of them or None")
        if self.expect is None and (self.words or not self.status):
            raise ValueError(f"loop case {self.name!r}: a healthy loop has no evidence words "
                             "and needs the verdicts it may get in status, e.g. ('healthy',)")


# ---------------------------------------------------------------------------- the faulty loops


def scheduler_per_batch(s: LoopSetup) -> Monitor:
    model, loader, loss_fn, epochs = s.model, s.loader, s.loss_fn, s.epochs
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    scheduler = StepLR(optimizer, step_size=1, gamma=0.5)
    monitor = Monitor(model, optimizer=optimizer, log_every=10, out_dir=s.out_dir, epochs=epochs)
    for _epoch in range(epochs):
        for batch in loader:
            scores = model(batch)
            loss = loss_fn(scores, batch.y)
            optimizer.zero_grad()
            loss.backward()
            monitor.step(scores, batch.y, loss)
            optimizer.step()
            scheduler.step()  # BUG: a per-epoch StepLR stepped per batch: lr halves each step
        monitor.end_epoch()
    return monitor


def optimizer_never_steps(s: LoopSetup) -> Monitor:
    model, loader, loss_fn, epochs = s.model, s.loader, s.loss_fn, s.epochs
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    scheduler = LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 40))  # warm-up
    monitor = Monitor(model, optimizer=optimizer, log_every=10, out_dir=s.out_dir, epochs=epochs)
    for _epoch in range(epochs):
        for batch in loader:
            scores = model(batch)
            loss = loss_fn(scores, batch.y)
            optimizer.zero_grad()
            loss.backward()
            monitor.step(scores, batch.y, loss)
            scheduler.step()  # BUG: scheduler.step() where optimizer.step() belongs
        monitor.end_epoch()
    return monitor


def no_zero_grad(s: LoopSetup) -> Monitor:
    model, loader, loss_fn, epochs = s.model, s.loader, s.loss_fn, s.epochs
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    monitor = Monitor(model, optimizer=optimizer, log_every=10, out_dir=s.out_dir, epochs=epochs)
    for _epoch in range(epochs):
        for batch in loader:
            scores = model(batch)
            loss = loss_fn(scores, batch.y)
            loss.backward()  # BUG: no optimizer.zero_grad(): gradients add up over all steps
            monitor.step(scores, batch.y, loss)
            optimizer.step()
        monitor.end_epoch()
    return monitor


def next_iter_each_step(s: LoopSetup) -> Monitor:
    model, loss_fn, epochs = s.model, s.loss_fn, s.epochs
    loader = DataLoader(s.graphs, batch_size=8)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    monitor = Monitor(model, optimizer=optimizer, log_every=10, out_dir=s.out_dir, epochs=epochs)
    for _epoch in range(epochs):
        for _ in range(len(loader)):
            batch = next(iter(loader))  # BUG: a fresh iterator each step: always batch 0
            scores = model(batch)
            loss = loss_fn(scores, batch.y)
            optimizer.zero_grad()
            loss.backward()
            monitor.step(scores, batch.y, loss)
            optimizer.step()
        monitor.end_epoch()
    return monitor


def targets_in_file_order(s: LoopSetup) -> Monitor:
    model, loader, loss_fn, epochs = s.model, s.loader, s.loss_fn, s.epochs
    y_all = torch.cat([g.y for g in s.graphs])
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    monitor = Monitor(model, optimizer=optimizer, log_every=10, out_dir=s.out_dir, epochs=epochs)
    for _epoch in range(epochs):
        for i, batch in enumerate(loader):
            y = y_all[i * 8:(i + 1) * 8]  # BUG: targets in file order, the loader shuffles
            scores = model(batch)
            loss = loss_fn(scores, y)
            optimizer.zero_grad()
            loss.backward()
            monitor.step(scores, y, loss)
            optimizer.step()
        monitor.end_epoch()
    return monitor


def clip_tiny(s: LoopSetup) -> Monitor:
    model, loader, loss_fn, epochs = s.model, s.loader, s.loss_fn, s.epochs
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    monitor = Monitor(model, optimizer=optimizer, log_every=10, out_dir=s.out_dir, epochs=epochs)
    for _epoch in range(epochs):
        for batch in loader:
            scores = model(batch)
            loss = loss_fn(scores, batch.y)
            optimizer.zero_grad()
            loss.backward()
            monitor.step(scores, batch.y, loss)
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1e-7)  # BUG: 1e-7
            optimizer.step()
        monitor.end_epoch()
    return monitor


def loss_from_item(s: LoopSetup) -> Monitor:
    model, loader, loss_fn, epochs = s.model, s.loader, s.loss_fn, s.epochs
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    monitor = Monitor(model, optimizer=optimizer, log_every=10, out_dir=s.out_dir, epochs=epochs)
    for _epoch in range(epochs):
        for batch in loader:
            scores = model(batch)
            loss = loss_fn(scores, batch.y)
            loss = torch.tensor(loss.item(), requires_grad=True)  # BUG: rebuilt from .item()
            optimizer.zero_grad()
            loss.backward()
            monitor.step(scores, batch.y, loss)
            optimizer.step()
        monitor.end_epoch()
    return monitor


def forward_no_grad(s: LoopSetup) -> Monitor:
    model, loader, loss_fn, epochs = s.model, s.loader, s.loss_fn, s.epochs
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    monitor = Monitor(model, optimizer=optimizer, log_every=10, out_dir=s.out_dir, epochs=epochs)
    for _epoch in range(epochs):
        for batch in loader:
            with torch.no_grad():  # BUG: the forward under no_grad, its graph never built
                scores = model(batch)
            loss = loss_fn(scores, batch.y)
            loss.requires_grad_(True)  # the "fix" for "element 0 ... does not require grad"
            optimizer.zero_grad()
            loss.backward()
            monitor.step(scores, batch.y, loss)
            optimizer.step()
        monitor.end_epoch()
    return monitor


def huge_weight_decay(s: LoopSetup) -> Monitor:
    model, loader, loss_fn, epochs = s.model, s.loader, s.loss_fn, s.epochs
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3, weight_decay=1.0)  # BUG: 1.0
    monitor = Monitor(model, optimizer=optimizer, log_every=10, out_dir=s.out_dir, epochs=epochs)
    for _epoch in range(epochs):
        for batch in loader:
            scores = model(batch)
            loss = loss_fn(scores, batch.y)
            optimizer.zero_grad()
            loss.backward()
            monitor.step(scores, batch.y, loss)
            optimizer.step()
        monitor.end_epoch()
    return monitor


# ---------------------------------------------------------------------------- the healthy loops


def adam(s: LoopSetup) -> Monitor:
    model, loader, loss_fn, epochs = s.model, s.loader, s.loss_fn, s.epochs
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    monitor = Monitor(model, optimizer=optimizer, log_every=10, out_dir=s.out_dir, epochs=epochs)
    for _epoch in range(epochs):
        for batch in loader:
            scores = model(batch)
            loss = loss_fn(scores, batch.y)
            optimizer.zero_grad()
            loss.backward()
            monitor.step(scores, batch.y, loss)
            optimizer.step()
        monitor.end_epoch()
    return monitor


def sgd_momentum(s: LoopSetup) -> Monitor:
    model, loader, loss_fn, epochs = s.model, s.loader, s.loss_fn, s.epochs
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)  # 240 epochs
    monitor = Monitor(model, optimizer=optimizer, log_every=10, out_dir=s.out_dir, epochs=epochs)
    for _epoch in range(epochs):
        for batch in loader:
            scores = model(batch)
            loss = loss_fn(scores, batch.y)
            optimizer.zero_grad()
            loss.backward()
            monitor.step(scores, batch.y, loss)
            optimizer.step()
        monitor.end_epoch()
    return monitor


def step_lr_per_epoch(s: LoopSetup) -> Monitor:
    model, loader, loss_fn, epochs = s.model, s.loader, s.loss_fn, s.epochs
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    scheduler = StepLR(optimizer, step_size=30, gamma=0.5)
    monitor = Monitor(model, optimizer=optimizer, log_every=10, out_dir=s.out_dir, epochs=epochs)
    for _epoch in range(epochs):
        for batch in loader:
            scores = model(batch)
            loss = loss_fn(scores, batch.y)
            optimizer.zero_grad()
            loss.backward()
            monitor.step(scores, batch.y, loss)
            optimizer.step()
        scheduler.step()  # once per epoch, as StepLR is meant
        monitor.end_epoch()
    return monitor


def cosine_per_epoch(s: LoopSetup) -> Monitor:
    model, loader, loss_fn, epochs = s.model, s.loader, s.loss_fn, s.epochs
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    scheduler = CosineAnnealingLR(optimizer, T_max=epochs)
    monitor = Monitor(model, optimizer=optimizer, log_every=10, out_dir=s.out_dir, epochs=epochs)
    for _epoch in range(epochs):
        for batch in loader:
            scores = model(batch)
            loss = loss_fn(scores, batch.y)
            optimizer.zero_grad()
            loss.backward()
            monitor.step(scores, batch.y, loss)
            optimizer.step()
        scheduler.step()  # once per epoch: T_max counts epochs
        monitor.end_epoch()
    return monitor


def one_cycle_per_batch(s: LoopSetup) -> Monitor:
    model, loader, loss_fn, epochs = s.model, s.loader, s.loss_fn, s.epochs
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    scheduler = OneCycleLR(optimizer, max_lr=1e-2, total_steps=epochs * len(loader))
    monitor = Monitor(model, optimizer=optimizer, log_every=10, out_dir=s.out_dir, epochs=epochs)
    for _epoch in range(epochs):
        for batch in loader:
            scores = model(batch)
            loss = loss_fn(scores, batch.y)
            optimizer.zero_grad()
            loss.backward()
            monitor.step(scores, batch.y, loss)
            optimizer.step()
            scheduler.step()  # per batch, as OneCycleLR is meant: total_steps counts batches
        monitor.end_epoch()
    return monitor


def accumulate_two(s: LoopSetup) -> Monitor:
    model, loader, loss_fn, epochs = s.model, s.loader, s.loss_fn, s.epochs
    k = 2  # batches per optimizer step
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    monitor = Monitor(model, optimizer=optimizer, log_every=10, out_dir=s.out_dir, epochs=epochs)
    for _epoch in range(epochs):
        for i, batch in enumerate(loader):
            scores = model(batch)
            loss = loss_fn(scores, batch.y) / k
            loss.backward()
            monitor.step(scores, batch.y, loss)
            if (i + 1) % k == 0:  # gradient accumulation: one update per k batches
                optimizer.step()
                optimizer.zero_grad()
        monitor.end_epoch()
    return monitor


def no_shuffle(s: LoopSetup) -> Monitor:
    model, loss_fn, epochs = s.model, s.loss_fn, s.epochs
    loader = DataLoader(s.graphs, batch_size=32)  # in file order: the README's full batch
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    monitor = Monitor(model, optimizer=optimizer, log_every=10, out_dir=s.out_dir, epochs=epochs)
    for _epoch in range(epochs):
        for batch in loader:
            scores = model(batch)
            loss = loss_fn(scores, batch.y)
            optimizer.zero_grad()
            loss.backward()
            monitor.step(scores, batch.y, loss)
            optimizer.step()
        monitor.end_epoch()
    return monitor


def column_targets(s: LoopSetup) -> Monitor:
    model, loader, loss_fn, epochs = s.model, s.loader, s.loss_fn, s.epochs  # [G, 1] scores
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    monitor = Monitor(model, optimizer=optimizer, log_every=10, out_dir=s.out_dir, epochs=epochs)
    for _epoch in range(epochs):
        for batch in loader:
            scores = model(batch)
            y = batch.y.view(-1, 1)  # [G, 1], shaped like the scores
            loss = loss_fn(scores.view(-1), y.view(-1))
            optimizer.zero_grad()
            loss.backward()
            monitor.step(scores, y, loss)
            optimizer.step()
        monitor.end_epoch()
    return monitor


def still_learning(s: LoopSetup) -> Monitor:
    model, loader, loss_fn, epochs = s.model, s.loader, s.loss_fn, s.epochs
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)  # stops while still learning
    monitor = Monitor(model, optimizer=optimizer, log_every=10, out_dir=s.out_dir, epochs=epochs)
    for _epoch in range(epochs):
        for batch in loader:
            scores = model(batch)
            loss = loss_fn(scores, batch.y)
            optimizer.zero_grad()
            loss.backward()
            monitor.step(scores, batch.y, loss)
            optimizer.step()
        monitor.end_epoch()
    return monitor


# ---------------------------------------------------------------------------- the zoo

LOOP_FAULTS: tuple[LoopCase, ...] = (
    LoopCase("scheduler_per_batch", "hazdzz/stgcn#18, Lornatang/SRGAN-PyTorch#1",
             "lr_schedule_collapse", scheduler_per_batch, words=("per batch",)),
    LoopCase("optimizer_never_steps", "ClementPinard/SfmLearner-Pytorch#5",
             "optimizer_not_stepping", optimizer_never_steps,
             words=("optimizer.step()", "0 times")),
    LoopCase("no_zero_grad", "fastai/fastai#3023", "gradients_accumulate", no_zero_grad,
             words=("zero_grad",)),
    LoopCase("next_iter_each_step", "wandb/examples#444", "same_batch", next_iter_each_step,
             words=("same",)),
    LoopCase("targets_in_file_order", "MultiChannelSleepNet#1, an2vec#48",
             "targets_misaligned", targets_in_file_order, words=("not the batch's own y",)),
    LoopCase("clip_tiny", "clip_grad_norm_(max_norm=1e-7)", "gradients_clipped_away",
             clip_tiny, words=("times smaller",)),
    LoopCase("loss_from_item", "torch.tensor(loss.item(), requires_grad=True)",
             "loss_detached", loss_from_item, words=("no grad_fn", "reaches no parameter")),
    LoopCase("forward_no_grad", "StackOverflow: 'element 0 of tensors does not require grad'",
             "loss_detached", forward_no_grad,
             words=("requires_grad=False", "torch.no_grad()")),
    LoopCase("huge_weight_decay", "Adam(weight_decay=1.0)", "over_regularized",
             huge_weight_decay, words=("weight decay is 1",)),
)
"""Loops with a known bug: the doctor must name ``expect`` among its first two causes."""

HEALTHY_LOOPS: tuple[LoopCase, ...] = (
    LoopCase("adam", "README: 'Your own training loop'", None, adam),
    LoopCase("sgd_momentum", "SGD lr 0.05, momentum 0.9", None, sgd_momentum, epochs=240),
    LoopCase("step_lr_per_epoch", "StepLR(step_size=30) per epoch", None, step_lr_per_epoch),
    LoopCase("cosine_per_epoch", "CosineAnnealingLR(T_max=epochs) per epoch", None,
             cosine_per_epoch),
    LoopCase("one_cycle_per_batch", "OneCycleLR per batch", None, one_cycle_per_batch),
    LoopCase("accumulate_two", "gradient accumulation, k=2", None, accumulate_two),
    LoopCase("no_shuffle", "README: DataLoader(graphs, batch_size=32)", None, no_shuffle),
    LoopCase("column_targets", "[G, 1] scores, batch.y.view(-1, 1)", None, column_targets,
             model=partial(GAT, column=True)),
    LoopCase("still_learning", "Adam lr 1e-3, 80 epochs", None, still_learning,
             status=("still_learning",), epochs=80),
)
"""Loops without a bug: the doctor must name no cause, and the verdict be one of ``status``."""
