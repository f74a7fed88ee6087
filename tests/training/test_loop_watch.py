"""The loop's mechanics as gatrank.Monitor watches them (gatrank.training.loop_watch): gradient
resets told apart from accumulation done right, optimizer steps counted also without the
optimizer given (and only those of this model's optimizers), the learning rate of every step
and where it changed, the gradient the optimizer stepped with against backward's, the input of
each step and the targets passed against the batch's own y, with tensor inputs too; its hooks
survive deepcopy and torch.save without a warning, and close() removes them. The rules that
read it are tested on hand-written summaries where a count decides."""

from __future__ import annotations

import copy
import gc
import io
import warnings

import pytest
import torch
from torch_geometric.loader import DataLoader
from torch_geometric.nn import global_mean_pool

from gatrank import Monitor
from gatrank.config import Config, ModelConfig
from gatrank.doctor import DoctorOptions
from gatrank.doctor.loop_causes import loop_causes
from gatrank.doctor.state import Diagnosis
from gatrank.losses import pairwise_rank_loss
from gatrank.model import GATRanker

pytestmark = pytest.mark.usefixtures("one_thread")


def _model(graphs, seed: int = 0) -> GATRanker:
    torch.manual_seed(seed)
    return GATRanker(graphs[0].num_features,
                     ModelConfig(hidden_dim=8, heads=2, num_layers=2, dropout=0.0))


def _loss(scores, y):
    return pairwise_rank_loss(scores, y).loss


def _watched(monitor: Monitor) -> dict:
    return monitor.findings()["loop"]


def test_gradient_resets_tell_a_missing_zero_grad_from_accumulation_done_right(make_graphs):
    graphs = make_graphs(k=12)
    out = {}
    for how in ("zero_grad", "set_to_zero", "missing", "every_2"):
        model = _model(graphs)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        monitor = Monitor(model, optimizer=opt, log_every=1)
        loader = DataLoader(graphs, batch_size=3)
        for _ in range(3):
            for i, batch in enumerate(loader):
                if how == "zero_grad":
                    opt.zero_grad()
                elif how == "set_to_zero":
                    opt.zero_grad(set_to_none=False)
                scores = model(batch)
                loss = _loss(scores, batch.y) / (2 if how == "every_2" else 1)
                loss.backward()
                monitor.step(scores, batch.y, loss)
                if how != "every_2" or i % 2 == 1:
                    opt.step()
                    if how == "every_2":
                        opt.zero_grad()
            monitor.end_epoch()
        out[how] = _watched(monitor)["resets"]
    # 4 batches x 3 epochs = 12 optimizer steps; the next backward follows 11 of them
    assert out["zero_grad"] == {"checked": 11, "not_reset": 0}
    assert out["set_to_zero"] == {"checked": 11, "not_reset": 0}
    assert out["missing"] == {"checked": 11, "not_reset": 11}
    assert out["every_2"] == {"checked": 5, "not_reset": 0}  # 6 steps, every one zeroed


def test_optimizer_steps_are_counted_without_the_optimizer_and_only_this_models(make_graphs):
    graphs = make_graphs(k=8)
    model, other = _model(graphs), _model(graphs, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    other_opt = torch.optim.Adam(other.parameters(), lr=0.01)
    monitor = Monitor(model, log_every=1)  # no optimizer given: the global hooks watch
    for _ in range(2):
        for batch in DataLoader(graphs, batch_size=4):
            for m, o in ((model, opt), (other, other_opt)):
                o.zero_grad()
                scores = m(batch)
                loss = _loss(scores, batch.y)
                loss.backward()
                if m is model:
                    monitor.step(scores, batch.y, loss)
                o.step()
        monitor.end_epoch()
    seen = _watched(monitor)
    assert seen["optimizer"] is False and seen["optimizer_seen"] is True
    assert seen["optimizer_steps"] == 4 and seen["steps"] == 4
    monitor.close()
    opt.step()  # after close() the global hooks are gone
    assert _watched(monitor)["optimizer_steps"] == 4


def test_learning_rates_per_step_and_where_they_changed(make_graphs):
    graphs = make_graphs(k=8)
    runs = {}
    for where in ("batch", "epoch"):
        model = _model(graphs)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.1)
        monitor = Monitor(model, optimizer=opt, log_every=1)
        for _ in range(3):
            for batch in DataLoader(graphs, batch_size=2):  # 4 steps an epoch
                opt.zero_grad()
                scores = model(batch)
                loss = _loss(scores, batch.y)
                loss.backward()
                monitor.step(scores, batch.y, loss)
                opt.step()
                if where == "batch":
                    sched.step()
            if where == "epoch":
                sched.step()
            monitor.end_epoch()
        runs[where] = _watched(monitor)["lr"]
    batch, epoch = runs["batch"], runs["epoch"]
    assert batch["first"] == epoch["first"] == 0.1 and batch["max"] == 0.1
    assert batch["last"] == pytest.approx(0.1 * 0.1 ** 11)
    # per batch: 3 changes inside each epoch, 2 across epoch boundaries
    assert batch["changes_within_epochs"] == 9 and batch["changes_between_epochs"] == 2
    assert batch["epochs_changed_within"] == 3
    assert batch["low_steps"] == 9  # 0.1, 0.01, 0.001, then 9 steps below 1% of the peak
    assert epoch["changes_within_epochs"] == 0 and epoch["changes_between_epochs"] == 2
    assert epoch["last"] == pytest.approx(0.001) and epoch["low_steps"] == 0


def test_the_gradient_stepped_with_is_compared_with_backwards(make_graphs):
    graphs = make_graphs(k=8)
    ratios = {}
    for max_norm in (None, 1e-6):
        model = _model(graphs)
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
        monitor = Monitor(model, optimizer=opt, log_every=1)
        for _ in range(2):
            for batch in DataLoader(graphs, batch_size=4):
                opt.zero_grad()
                scores = model(batch)
                loss = _loss(scores, batch.y)
                loss.backward()
                monitor.step(scores, batch.y, loss)
                if max_norm is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
                opt.step()
            monitor.end_epoch()
        g = _watched(monitor)["grads"]
        assert g["pairs"] == 4
        ratios[max_norm] = g["backward_median"] / g["stepped_median"]
        if max_norm is not None:
            assert g["stepped_median"] == pytest.approx(max_norm, rel=1e-3)
    assert ratios[None] == pytest.approx(1.0)
    assert ratios[1e-6] > 1e3


def test_inputs_and_targets_are_read_from_the_batch_or_from_tensors(make_graphs):
    graphs = make_graphs(k=8)
    model = _model(graphs)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    monitor = Monitor(model, optimizer=opt, log_every=1)
    loader = DataLoader(graphs, batch_size=4, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    y_file_order = torch.cat([g.y for g in graphs])
    for _ in range(3):
        for i, batch in enumerate(loader):
            opt.zero_grad()
            scores = model(batch)
            y = y_file_order[4 * i:4 * i + 4]  # the bug: targets by position
            loss = _loss(scores, y)
            loss.backward()
            monitor.step(scores, y, loss)
            opt.step()
        monitor.end_epoch()
    t = _watched(monitor)["targets"]
    assert t["checked"] == 6 and t["misaligned"] + t["reversed"] <= 6
    assert t["misaligned"] >= 3 and t["example"]["y"] != t["example"]["targets"]

    class TensorModel(torch.nn.Module):  # PyG's examples: model(x, edge_index, batch)
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(graphs[0].num_features, 1)

        def forward(self, x, edge_index, batch):
            return global_mean_pool(self.lin(x), batch).squeeze(-1)

    model = TensorModel()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    monitor = Monitor(model, optimizer=opt, log_every=1)
    first = next(iter(DataLoader(graphs, batch_size=4)))
    for _ in range(2):
        for _ in range(2):  # the same batch, twice an epoch
            opt.zero_grad()
            scores = model(first.x, first.edge_index, first.batch)
            loss = _loss(scores, first.y)
            loss.backward()
            monitor.step(scores, -first.y, loss)  # reversed targets are not misaligned
            opt.step()
        monitor.end_epoch()
    seen = _watched(monitor)
    assert seen["inputs"]["distinct"] == 1 and seen["inputs"]["one_input_epochs"] == 2
    assert seen["targets"]["checked"] == 0  # no batch object: no y to compare with
    assert seen["mode"] == {"steps": 4, "eval_steps": 0}


def test_hooks_survive_deepcopy_and_save_quietly_and_close_removes_them(make_graphs):
    graphs = make_graphs(k=8)
    model = _model(graphs)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    monitor = Monitor(model, optimizer=opt, log_every=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.save(model, io.BytesIO())
        torch.save(opt, io.BytesIO())
    twin = copy.deepcopy(model)
    assert all(not p._backward_hooks for p in twin.parameters())
    assert not model._forward_pre_hooks  # the model's own tables stay as they were
    assert opt._optimizer_step_pre_hooks and any(p._backward_hooks for p in model.parameters())
    global_hooks = len(torch.nn.modules.module._global_forward_pre_hooks)
    monitor.close()
    assert len(torch.nn.modules.module._global_forward_pre_hooks) == global_hooks - 1
    assert not opt._optimizer_step_pre_hooks and not opt._optimizer_step_post_hooks
    assert all(not p._backward_hooks for p in model.parameters())


def test_a_monitor_dropped_without_close_takes_its_hooks_with_it(make_graphs):
    graphs = make_graphs(k=8)
    model = _model(graphs)
    gc.collect()  # the Monitors of earlier tests, dropped
    before = len(torch.nn.modules.module._global_forward_pre_hooks)
    monitor = Monitor(model, log_every=1)  # global optimizer hooks too
    assert len(torch.nn.modules.module._global_forward_pre_hooks) == before + 1
    del monitor
    gc.collect()
    assert len(torch.nn.modules.module._global_forward_pre_hooks) == before
    assert all(not p._backward_hooks for p in model.parameters())


def test_monitor_step_before_backward_and_bad_arguments_say_what_to_change(make_graphs):
    graphs = make_graphs(k=8)
    model = _model(graphs)
    monitor = Monitor(model, optimizer=torch.optim.Adam(model.parameters()), log_every=1)
    batch = next(iter(DataLoader(graphs, batch_size=4)))
    scores = model(batch)
    loss = _loss(scores, batch.y)
    with pytest.raises(ValueError, match=r"came before loss.backward\(\).*grad_fn=") as err:
        monitor.step(scores, batch.y, loss)
    assert "Call it after loss.backward() and before optimizer.step()" in str(err.value)
    loss.backward()
    with pytest.raises(ValueError, match=r"4 scores for 3 targets .*shape \(3,\)"):
        monitor.step(scores, batch.y[:3], loss)
    with pytest.raises(ValueError, match=r"the loss has shape \(4,\).*\.mean\(\)"):
        monitor.step(scores, batch.y, scores.detach())
    with pytest.raises(TypeError, match="targets is a list"):
        monitor.step(scores, batch.y.tolist(), loss)
    with pytest.raises(TypeError, match="the loss is a NoneType"):
        monitor.step(scores, batch.y, None)
    monitor.step(scores, batch.y, loss)  # and the right call goes through
    assert monitor.end_epoch() is not None


def _summary(**over) -> dict:
    base = {"steps": 400, "epochs": 100, "steps_per_epoch": [4, 4], "optimizer": True,
            "optimizer_seen": True, "optimizer_steps": 400, "optimizer_steps_per_epoch": [4, 4],
            "lr": {"first": 1e-3, "max": 1e-3, "last": 1e-3, "low_steps": 0,
                   "low_since_epoch": None, "changes_within_epochs": 0,
                   "changes_between_epochs": 0, "epochs_changed_within": 0, "by_epoch": []},
            "resets": {"checked": 40, "not_reset": 0},
            "grads": {"pairs": 44, "backward_median": 2.0, "stepped_median": 1.0},
            "inputs": {"steps": 44, "distinct": 40, "graphs_per_step": [8],
                       "multi_step_epochs": 11, "one_input_epochs": 0},
            "targets": {"checked": 44, "misaligned": 0, "reversed": 0, "example": None},
            "mode": {"steps": 400, "eval_steps": 0}}
    for k, v in over.items():
        base[k] = {**base[k], **v} if isinstance(v, dict) else v
    return base


_MOVED = [{"update_ratio": None}, {"update_ratio": 1e-3}]


@pytest.mark.parametrize(("over", "failed", "expect"), [
    ({}, True, []),
    # an AMP GradScaler: 65536 times smaller, but gradients of a normal size
    ({"grads": {"backward_median": 6.5e4, "stepped_median": 1.0}}, True, []),
    ({"grads": {"backward_median": 3.0, "stepped_median": 1e-7}}, True,
     ["gradients_clipped_away"]),
    ({"grads": {"backward_median": 3.0, "stepped_median": 1e-7}}, False, []),
    # OneCycleLR per batch: changes at every step, below 1% of the peak for its last ~5%
    ({"lr": {"low_steps": 20, "changes_within_epochs": 300, "epochs_changed_within": 100}},
     True, []),
    ({"lr": {"low_steps": 390, "last": 1e-120, "low_since_epoch": 3,
             "changes_within_epochs": 300, "epochs_changed_within": 100}}, True,
     ["lr_schedule_collapse"]),
    # full-batch training: one step an epoch on the same graphs is no bug
    ({"steps_per_epoch": [1, 1], "inputs": {"distinct": 1, "multi_step_epochs": 0}}, False, []),
    ({"inputs": {"distinct": 1, "one_input_epochs": 11}}, False, ["same_batch"]),
    # several steps an epoch on the whole training set (num_graphs=8): deliberate
    ({"inputs": {"distinct": 1, "one_input_epochs": 11}, "num_graphs": 8}, False, []),
    ({"resets": {"checked": 40, "not_reset": 19}}, False, []),
    ({"resets": {"checked": 40, "not_reset": 40}}, False, ["gradients_accumulate"]),
    ({"targets": {"checked": 44, "misaligned": 5, "reversed": 39}}, False, []),
    ({"targets": {"checked": 44, "misaligned": 40}}, False, ["targets_misaligned"]),
    ({"optimizer_steps": 0}, True, ["optimizer_not_stepping"]),
])
def test_each_loop_cause_needs_a_count_a_correct_loop_cannot_produce(over, failed, expect):
    doc = Diagnosis(None, Config(), None, None, None, DoctorOptions(), 0)
    history = [{"update_ratio": None}, {"update_ratio": 0.0}] if over.get("optimizer_steps") \
        == 0 else _MOVED
    assert loop_causes(doc, _summary(**over), history, failed=failed) == expect
    assert sorted(doc.causes) == sorted(expect)


def test_a_model_left_in_eval_mode_is_a_note_and_changes_nothing_else(make_graphs):
    graphs = make_graphs(k=8)
    model = _model(graphs)
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    monitor = Monitor(model, optimizer=opt, log_every=1)
    model.eval()  # the bug: validation's eval() never undone
    for _ in range(20):
        for batch in DataLoader(graphs, batch_size=4):
            opt.zero_grad()
            scores = model(batch)
            loss = _loss(scores, batch.y)
            loss.backward()
            monitor.step(scores, batch.y, loss)
            opt.step()
        monitor.end_epoch()
    assert _watched(monitor)["mode"] == {"steps": 40, "eval_steps": 40}
    reading = monitor.diagnose()
    note = next(n for n in reading.notes if "eval mode" in n)
    assert note.startswith("the model was in eval mode at 40 of 40 training steps")
    assert "model.train()" in note and reading.causes == []
