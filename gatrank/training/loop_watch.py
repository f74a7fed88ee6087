"""The mechanics of a user's training loop, watched through PyTorch's public hooks: what
:class:`gatrank.Monitor` sees besides the records.

A loop's records (loss, ranking metrics, gradient norms) show a symptom: the scores stay
constant, the loss stays flat. Where the loop itself is wrong, the cause is in its mechanics,
and :class:`LoopWatch` watches those:

- **the optimizer** (``Optimizer.register_step_pre_hook`` / ``register_step_post_hook``, on the
  optimizer given, else the global hooks filtered to optimizers holding the model's
  parameters): how often ``optimizer.step()`` runs, the learning rate of every step (and
  whether it changed within an epoch, between its steps, or only between epochs), and the
  norm of the gradients it steps with against the norm backward produced when
  ``monitor.step`` saw them;
- **gradients between steps** (a tensor hook on up to three parameters, run by backward before
  the new gradient is added): whether the gradient was reset (``None`` or zeros) since the last
  optimizer step, so that ``zero_grad`` missing is told apart from accumulation done right
  (``zero_grad`` after every ``optimizer.step()``, however many backward passes in between);
- **the input of each step** (PyTorch's global forward pre-hook, filtered to the model, so that
  nothing is added to the model's own hook tables): a fingerprint of the batch
  (graph count, node count, a sum of ``x``), so that the same batch every step is seen, and the
  batch's own ``y``, so that targets passed to ``monitor.step`` that are not the graphs' own
  (taken in file order while the loader shuffles) are seen;
- whether the model was in training mode at each step (of the sampled epochs).

It never changes training: no forward pass of its own, no mode switch, no random numbers;
gradients and weights are only read (the tensor hooks return None, so backward adds exactly the
gradient it computed). Costly readings (sums over a tensor, norms) are taken only in the
epochs the Monitor records (``sampling``), and kept as tensors until the epoch ends (one sync
per epoch on a GPU); the forward hook is there in those epochs only (:meth:`LoopWatch.start_epoch`).
Between them a step costs the optimizer's and three parameters' hook calls and a float read of
the learning rate.

:meth:`LoopWatch.summary` is plain JSON data (the ``loop`` key of the Monitor's findings, and of
``findings.json``); :mod:`gatrank.doctor.loop_causes` reads it.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.module import register_module_forward_pre_hook
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)

__all__ = ["LoopWatch", "LOW_LR_FRACTION", "PROBE_PARAMETERS"]

LOW_LR_FRACTION = 0.01
"""A step whose learning rate is below this fraction of the highest one so far counts as a
step at a collapsed learning rate."""

PROBE_PARAMETERS = 3
"""Parameters whose gradient is checked for a reset after each optimizer step (the first ones
the optimizer holds): one whose gradient is always zero says nothing, so a few are watched."""

MAX_KEPT_STEPS = 512
"""Sampled steps whose fingerprints and target pairs are kept per epoch (all are counted)."""


class _Hook:
    """A hook that calls ``method`` of a :class:`LoopWatch` through a weak reference: the model,
    its parameters and PyTorch's global hook tables never keep a watch (and its model) alive,
    and a hook whose watch is gone does nothing. ``torch.save`` of a parameter skips it quietly
    (PyTorch warns about hooks it cannot serialize unless they carry
    ``__torch_unserializable__``)."""

    __torch_unserializable__ = True

    def __init__(self, watch: LoopWatch, method: str, *bound: Any) -> None:
        self.ref = weakref.ref(watch)
        self.method, self.bound = method, bound

    def __call__(self, *args: Any) -> None:
        watch = self.ref()
        if watch is not None:
            getattr(watch, self.method)(*self.bound, *args)


@dataclass
class _Input:
    """What the forward pass before a step got."""

    graphs: int | None
    nodes: int | None
    checksum: Tensor | None
    y: Tensor | None
    training: bool


@dataclass
class _EpochWatch:
    """The sampled readings of the current epoch, synced at its end."""

    fingerprints: list[tuple[int | None, int | None, Tensor | None]] = field(default_factory=list)
    pairs: list[tuple[int, Tensor, Tensor]] = field(default_factory=list)
    """(step index, targets passed, the batch's own y), flattened copies."""
    resets: list[Tensor | None] = field(default_factory=list)
    """Per optimizer step watched: the largest |gradient| the probes still held when the next
    backward added to them (None: every probe's gradient had been set to None)."""
    grads: list[tuple[Tensor, Tensor]] = field(default_factory=list)
    """(norm backward produced at monitor.step, norm the optimizer stepped with)."""
    steps: int = 0
    optimizer_steps: int = 0
    lr_changes: int = 0
    """Changes of the learning rate between two optimizer steps of this epoch."""


def _as_float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _grad_norm(params: list[nn.Parameter]) -> Tensor | None:
    """The L2 norm of the gradients of ``params`` as a 0-d tensor (no sync; one fused call, as
    ``clip_grad_norm_`` measures it); None without a gradient."""
    grads = [p.grad.detach() for p in params if p.grad is not None]
    if not grads:
        return None
    return torch.nn.utils.get_total_norm(grads, foreach=None)


def _graph_input(args: tuple) -> Any:
    """The PyG batch (an object with ``x``) among a forward's arguments, else None."""
    for a in args:
        if hasattr(a, "x") and isinstance(getattr(a, "x", None), Tensor):
            return a
    return None


class LoopWatch:
    """Hooks on a model and its optimizer that watch a user's loop (see the module docstring).

    Args:
        model: the model the loop trains.
        optimizer: the loop's optimizer; None watches every optimizer that steps one of the
            model's parameters (PyTorch's global optimizer hooks).
        sampling: whether the current epoch is one whose readings are taken (the Monitor's
            logged epochs).
        epoch: the current epoch (1-based).

    Call :meth:`after_backward` once a step's gradients are complete, :meth:`before_step` with
    the targets the loop passed (``monitor.step`` calls both), :meth:`end_epoch` at each
    epoch's end, and :meth:`close` to remove the hooks.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, *,
                 sampling: Callable[[], bool] = lambda: True,
                 epoch: Callable[[], int] = lambda: 1) -> None:
        self.model, self.optimizer = model, optimizer
        self._sampling, self._epoch = sampling, epoch
        trainable = [p for p in model.parameters() if p.requires_grad]
        self._model_params = {id(p) for p in trainable}
        held = ([p for g in optimizer.param_groups for p in g["params"]
                 if id(p) in self._model_params] if optimizer is not None else trainable)
        self._stepped = held or trainable
        self._probes = self._stepped[:PROBE_PARAMETERS]
        self._handles: list[Any] = []
        self._holds: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        # the run so far
        self.steps = 0
        self.epochs = 0
        self.optimizer_steps = 0
        self.optimizer_seen = optimizer is not None
        self.steps_per_epoch: list[int] = []
        self.optimizer_steps_per_epoch: list[int] = []
        self.lr_first: float | None = None
        self.lr_max = 0.0
        self.lr_last: float | None = None
        self.lr_low_steps = 0
        self.lr_low_since: int | None = None
        """The epoch from which every optimizer step ran at a collapsed learning rate."""
        self.lr_changes_within = 0
        self.lr_changes_between = 0
        self.lr_epochs_changed_within = 0
        self.lr_by_epoch: list[tuple[int, float]] = []
        self.resets_checked = 0
        self.not_reset = 0
        self.grad_pairs: list[tuple[float, float]] = []
        self.input_steps = 0
        self.fingerprints: set[tuple] = set()
        self.graphs_per_step: set[int] = set()
        self.one_input_epochs = 0
        self.multi_step_epochs = 0
        self.eval_steps = 0
        self.mode_steps = 0
        self.leaf_loss_steps = 0
        """Steps whose loss required grad but had no graph behind it (rebuilt from a number)."""
        self.scores_without_graph = 0
        """Steps whose scores did not require grad (a forward under no_grad, or detached)."""
        self.targets_checked = 0
        self.misaligned = 0
        self.misaligned_example: dict[str, Any] | None = None
        self.reversed_targets = 0
        self._lr_prev: float | None = None
        self._lr_prev_epoch = 0
        self._await_reset = False
        self._reset_reading: Tensor | None = None
        self._pending_backward: Tensor | None = None
        self._input: _Input | None = None
        self._cur = _EpochWatch()
        self._attach()

    # ------------------------------------------------------------------ hooks

    def _attach(self) -> None:
        # the optimizer's own hooks (an optimizer pickles without them); without one, PyTorch's
        # global optimizer hooks. The model's input comes from the global module hook, filtered
        # to this model: a hook in the model's own table would be pickled with the model by
        # torch.save(model) and copied by copy.deepcopy(model)
        if self.optimizer is not None:
            self._handles += [
                self.optimizer.register_step_pre_hook(_Hook(self, "_pre_step")),
                self.optimizer.register_step_post_hook(_Hook(self, "_post_step"))]
        else:
            self._handles += [register_optimizer_step_pre_hook(_Hook(self, "_pre_any")),
                              register_optimizer_step_post_hook(_Hook(self, "_post_any"))]
        for p in self._probes:
            self._handles.append(p.register_hook(_Hook(self, "_probe", weakref.ref(p))))
        # a watch dropped without close() takes its hooks with it (the forward hook's list is
        # shared, so a hook added later goes too)
        self._forward_handle: list[Any] = []
        self._finalizer = weakref.finalize(self, _remove, [*self._handles], self._forward_handle)
        self.start_epoch()

    def start_epoch(self) -> None:
        """The loop enters a new epoch: the forward hook is on in sampled epochs only. A global
        module hook sends every module call of the process down PyTorch's slow path (2-3% of a
        small GAT's step here), so epochs whose input is not read do not carry it."""
        if self._sampling() and not self._forward_handle and self._handles:
            self._forward_handle.append(
                register_module_forward_pre_hook(_Hook(self, "_any_forward")))
        elif not self._sampling() and self._forward_handle:
            _remove(self._forward_handle)
            self._forward_handle.clear()

    def close(self) -> None:
        """Remove every hook (the Monitor's ``close``); the readings so far stay."""
        _remove(self._handles)
        _remove(self._forward_handle)
        self._handles = []
        self._forward_handle.clear()

    def _holds_model(self, optimizer: torch.optim.Optimizer) -> bool:
        known = self._holds.get(optimizer)
        if known is None:
            known = any(id(p) in self._model_params
                        for g in optimizer.param_groups for p in g["params"])
            self._holds[optimizer] = known
        return known

    def _pre_any(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if self._holds_model(optimizer):
            self.optimizer_seen = True
            self._pre_step(optimizer, args, kwargs)

    def _post_any(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if self._holds_model(optimizer):
            self._post_step(optimizer, args, kwargs)

    def _pre_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self.optimizer_steps += 1
        self._cur.optimizer_steps += 1
        lr = _as_float(optimizer.param_groups[0].get("lr", math.nan))
        epoch = self._epoch()
        if self.lr_first is None:
            self.lr_first = lr
        if math.isfinite(lr):
            self.lr_max = max(self.lr_max, lr)
            if lr < LOW_LR_FRACTION * self.lr_max:
                self.lr_low_steps += 1
                if self.lr_low_since is None:
                    self.lr_low_since = epoch
            else:
                self.lr_low_since = None
        if self._lr_prev is not None and lr != self._lr_prev:
            if epoch == self._lr_prev_epoch:
                self.lr_changes_within += 1
                self._cur.lr_changes += 1
            else:
                self.lr_changes_between += 1
        self._lr_prev, self._lr_prev_epoch, self.lr_last = lr, epoch, lr

    def _post_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        # the gradient stepped with is read after the step: a closure (LBFGS, Lightning) runs
        # backward inside optimizer.step(), after the pre-hook; .grad still holds it here
        if self._pending_backward is not None:
            stepped = _grad_norm(self._stepped)
            if stepped is not None:
                self._cur.grads.append((self._pending_backward, stepped))
            self._pending_backward = None
        if self._sampling():
            self._await_reset, self._reset_reading = True, None

    def _probe(self, ref: weakref.ref, grad: Tensor) -> None:
        # run by backward before it adds ``grad``: the parameter's .grad is what the last
        # optimizer step left, unless zero_grad reset it
        if not self._await_reset:
            return
        param = ref()
        old = None if param is None else param.grad
        if old is None:
            return
        amax = old.detach().abs().amax()
        now = self._reset_reading
        self._reset_reading = amax if now is None else torch.maximum(now, amax.to(now))

    def _any_forward(self, module: nn.Module, args: tuple) -> None:
        # on in sampled epochs only (start_epoch); PyTorch's global hook gets no kwargs
        if module is self.model:
            self._forward(module, args)

    def _forward(self, module: nn.Module, args: tuple) -> None:
        data = _graph_input(args)
        if data is not None:
            x, y = data.x, getattr(data, "y", None)
            graphs = getattr(data, "num_graphs", None)
            graphs = int(graphs) if isinstance(graphs, int) else None
        else:
            x = next((a for a in args if isinstance(a, Tensor) and a.is_floating_point()), None)
            y, graphs = None, None
        self._input = _Input(
            graphs=graphs, nodes=None if x is None else int(x.shape[0]),
            checksum=None if x is None else x.detach().sum(dtype=torch.float64),
            y=y.detach() if isinstance(y, Tensor) else None, training=module.training)

    # ------------------------------------------------------------------ the loop's calls

    def after_backward(self, backward_norm: Tensor | float | None) -> None:
        """A backward pass is complete (``monitor.step``; in Lightning ``on_after_backward``
        with None, then ``on_before_optimizer_step`` with the norm): ``backward_norm`` is the
        gradients' norm when it was measured (sampled epochs), which the gradient the next
        optimizer step steps with is compared with. The first call after a watched optimizer
        step closes its gradient-reset check."""
        if backward_norm is not None:
            self._pending_backward = torch.as_tensor(backward_norm, dtype=torch.float64)
        if self._await_reset:  # the first backward since a watched optimizer step is done
            self._cur.resets.append(self._reset_reading)
            self._await_reset, self._reset_reading = False, None

    def before_step(self, targets: Tensor, scores: Tensor | None = None,
                    loss: Tensor | float | None = None) -> None:
        """``monitor.step``: the targets the loop passed for the batch of its last forward, and
        its scores and loss, whose autograd state is read (a loss rebuilt from a number, scores
        made without a graph)."""
        self.steps += 1
        cur = self._cur
        cur.steps += 1
        if isinstance(loss, Tensor) and loss.requires_grad and loss.grad_fn is None:
            self.leaf_loss_steps += 1  # torch.tensor(loss.item(), requires_grad=True) & co
        if scores is not None and not scores.requires_grad:
            self.scores_without_graph += 1
        inp, self._input = self._input, None
        if inp is None:
            return
        self.mode_steps += 1
        self.eval_steps += not inp.training
        if inp.checksum is None:
            return  # no batch and no float tensor among the forward's arguments
        self.input_steps += 1
        if len(cur.fingerprints) < MAX_KEPT_STEPS:
            cur.fingerprints.append((inp.graphs, inp.nodes, inp.checksum))
        y = inp.y
        if y is not None and y.numel() == targets.numel() and y.numel() > 1 \
                and len(cur.pairs) < MAX_KEPT_STEPS:
            cur.pairs.append((cur.steps - 1, targets.detach().reshape(-1).clone(),
                              y.reshape(-1).clone()))

    def end_epoch(self) -> None:
        """Sync and summarize the epoch's sampled readings."""
        cur, self._cur = self._cur, _EpochWatch()
        epoch = self._epoch()
        self.epochs += 1
        self.steps_per_epoch.append(cur.steps)
        self.optimizer_steps_per_epoch.append(cur.optimizer_steps)
        if cur.lr_changes:
            self.lr_epochs_changed_within += 1
        if self._lr_prev is not None:
            self.lr_by_epoch.append((epoch, self._lr_prev))
        for old in cur.resets:
            self.resets_checked += 1
            self.not_reset += int(old is not None and float(old) > 0)
        for back, stepped in cur.grads:
            self.grad_pairs.append((float(back), float(stepped)))
        prints = [(g, n, None if s is None else float(s)) for g, n, s in cur.fingerprints]
        self.fingerprints.update(prints)
        self.graphs_per_step.update(g for g, _, _ in prints if g is not None)
        if cur.steps > 1 and len(prints) == cur.steps:
            self.multi_step_epochs += 1
            self.one_input_epochs += len(set(prints)) == 1
        for step, t, y in cur.pairs:
            agree = _agreement(t, y)
            if agree is None:
                continue
            self.targets_checked += 1
            if agree <= 0.02:
                self.reversed_targets += 1
            elif agree < 0.98:
                self.misaligned += 1
                if self.misaligned_example is None:
                    self.misaligned_example = {
                        "epoch": epoch, "step": step, "agreement": round(agree, 3),
                        "targets": [round(float(v), 4) for v in t[:4].tolist()],
                        "y": [round(float(v), 4) for v in y[:4].tolist()]}

    # ------------------------------------------------------------------ the reading

    def summary(self) -> dict[str, Any]:
        """What was watched, as plain JSON data (see :mod:`gatrank.doctor.loop_causes`)."""
        finite = [(b, s) for b, s in self.grad_pairs if math.isfinite(b) and math.isfinite(s)]
        backs, stepped = sorted(b for b, _ in finite), sorted(s for _, s in finite)
        return {
            "steps": self.steps,
            "epochs": self.epochs,
            "steps_per_epoch": _spread(self.steps_per_epoch),
            "optimizer": self.optimizer is not None,
            "optimizer_seen": self.optimizer_seen,
            "optimizer_steps": self.optimizer_steps,
            "optimizer_steps_per_epoch": _spread(self.optimizer_steps_per_epoch),
            "lr": {"first": self.lr_first, "max": self.lr_max or None, "last": self.lr_last,
                   "low_steps": self.lr_low_steps, "low_since_epoch": self.lr_low_since,
                   "changes_within_epochs": self.lr_changes_within,
                   "changes_between_epochs": self.lr_changes_between,
                   "epochs_changed_within": self.lr_epochs_changed_within,
                   "by_epoch": self.lr_by_epoch[:3] + self.lr_by_epoch[-3:]
                   if len(self.lr_by_epoch) > 6 else list(self.lr_by_epoch)},
            "resets": {"checked": self.resets_checked, "not_reset": self.not_reset},
            "grads": {"pairs": len(finite), "nonfinite_pairs": len(self.grad_pairs) - len(finite),
                      "backward_median": _median(backs), "stepped_median": _median(stepped)},
            "inputs": {"steps": self.input_steps, "distinct": len(self.fingerprints),
                       "graphs_per_step": sorted(self.graphs_per_step)[:8],
                       "multi_step_epochs": self.multi_step_epochs,
                       "one_input_epochs": self.one_input_epochs},
            "targets": {"checked": self.targets_checked, "misaligned": self.misaligned,
                        "reversed": self.reversed_targets,
                        "example": self.misaligned_example},
            "mode": {"steps": self.mode_steps, "eval_steps": self.eval_steps},
            "autograd": {"leaf_loss_steps": self.leaf_loss_steps,
                         "scores_without_graph": self.scores_without_graph},
        }


def _remove(*handles: list[Any]) -> None:
    for group in handles:
        for h in group:
            h.remove()  # removing twice is harmless


def _agreement(t: Tensor, y: Tensor) -> float | None:
    """The fraction of pairs of graphs with different ``y`` that ``t`` orders the same way
    (ties in ``t`` count as disagreeing); None without such a pair."""
    t, y = t.double().cpu(), y.double().cpu()
    dy = torch.sign(y[:, None] - y[None, :])
    dt = torch.sign(t[:, None] - t[None, :])
    mask = dy > 0
    n = int(mask.sum())
    if n == 0 or not bool(torch.isfinite(t).all()):
        return None
    return float((dt[mask] > 0).sum()) / n


def _median(v: list[float]) -> float | None:
    return float(v[len(v) // 2]) if v else None


def _spread(v: list[int]) -> list[int]:
    """[min, max] of per-epoch counts (empty before an epoch ends)."""
    return [min(v), max(v)] if v else []
