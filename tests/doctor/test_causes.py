"""The causes a person would name for bugs from real bug reports: a crash in the user's own code
(user_code_error, with the user's frame), a loss that broadcasts [G] against [G, 1]
(score_shape_mismatch, not loss_wrong_direction), weights that start identical
(bad_initialization, named by parameter); and the checks behind them on their own.
"""

from __future__ import annotations

import functools
import inspect
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import GCNConv, global_mean_pool

from gatrank.config import Config
from gatrank.doctor import DoctorOptions, diagnose
from gatrank.doctor import stages as doctor_stages
from gatrank.doctor.stages import constant_weights, loss_pairing
from gatrank.losses import make_loss_fn

FAST = DoctorOptions(heldout=False, overfit_epochs=60, stall_epochs=20)


class RaisesOnBigBatches(nn.Module):
    """A model with a hard-coded limit: fine on small batches, raises on big ones."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.lin = nn.Linear(in_channels, 1)

    def forward(self, x, batch):
        if x.shape[0] > 100:
            raise RuntimeError(f"buffer holds 100 nodes, got {x.shape[0]}")  # the user's line
        return self.lin(global_mean_pool(x, batch))


RAISING_LINE = inspect.getsourcelines(RaisesOnBigBatches.forward)[1] + 2


def broadcast_mse(scores, targets):
    return F.mse_loss(scores.unsqueeze(-1), targets)  # [G, 1] against [G]: a [G, G] mean


def test_an_exception_in_the_users_forward_is_a_cause_with_the_users_frame(zoo_set,
                                                                          check_report):
    report = diagnose(zoo_set, model=RaisesOnBigBatches(zoo_set.num_features), options=FAST)
    check_report(report)
    assert report.cause_ids == ["user_code_error"]
    (cause,) = report.causes
    assert "RuntimeError: buffer holds 100 nodes" in cause.evidence
    assert "in the model stage" in cause.evidence
    frame = cause.measured["frame"]
    assert frame["file"] == __file__ and frame["line"] == RAISING_LINE
    assert frame["function"] == "forward" and "raise RuntimeError" in frame["code"]
    assert f"line {RAISING_LINE}" in cause.fix
    assert report.verdict == "cannot_fit"
    assert report.stages[-1].name == "model" and report.stages[-1].status == "failed"
    json.dumps(report.to_dict())  # the report can always be written


def test_an_exception_in_the_users_loss_names_the_loss_and_the_stage(zoo_set):
    def picky_loss(scores, targets):
        if scores.numel() != 32:
            raise ValueError(f"expected a batch of 32, got {scores.numel()}")
        return (scores - targets).pow(2).mean()

    report = diagnose(zoo_set, loss=picky_loss, options=FAST)
    assert report.cause_ids == ["user_code_error"]
    assert report.verdict == "broken_loss"
    ev = report.causes[0].evidence
    assert ev.startswith("your loss raised ValueError: expected a batch of 32, got 16")
    assert "in the loss stage" in ev and "picky_loss" in ev


def test_an_error_that_never_passed_through_user_code_is_not_blamed_on_the_user(
        zoo_set, monkeypatch):
    # gatrank's own check failing (here: a C function raising inside the model stage) is
    # gatrank's bug, and must surface as an exception rather than a user_code_error
    monkeypatch.setattr(doctor_stages, "gradient_path", functools.partial(math.sqrt, -1.0))
    with pytest.raises(TypeError):
        diagnose(zoo_set, options=FAST)


def test_a_loss_that_broadcasts_is_a_shape_mismatch_not_a_wrong_direction(zoo_set,
                                                                         check_report):
    report = diagnose(zoo_set, loss=broadcast_mse, options=FAST)
    check_report(report)
    assert report.cause_ids[0] == "score_shape_mismatch"
    assert "loss_wrong_direction" not in report.cause_ids
    assert report.verdict == "broken_loss"
    cause = report.causes[0]
    assert "[G, G]" in cause.evidence and "different to the input size" in cause.evidence
    assert "view(-1)" in cause.fix


def test_loss_pairing_tells_a_broadcast_from_a_ranking_loss():
    cfg = Config()
    assert loss_pairing(make_loss_fn(broadcast_mse, cfg), cfg)["ignores_pairing"]
    assert not loss_pairing(make_loss_fn(None, cfg), cfg)["ignores_pairing"]
    plain = loss_pairing(make_loss_fn(lambda s, y: F.mse_loss(s, y), cfg), cfg)
    assert not plain["ignores_pairing"] and plain["warnings"] == []


class ZeroInitGCN(nn.Module):
    def __init__(self, in_channels: int, hidden: int = 16) -> None:
        super().__init__()
        self.conv = GCNConv(in_channels, hidden)
        self.lin = nn.Linear(hidden, 1)
        for p in self.parameters():
            nn.init.zeros_(p)

    def forward(self, x, edge_index, batch):
        return self.lin(global_mean_pool(self.conv(x, edge_index).relu(), batch))


def test_zero_initialisation_is_bad_initialization_named_by_parameter(zoo_set, check_report):
    report = diagnose(zoo_set, model=ZeroInitGCN(zoo_set.num_features), options=FAST)
    check_report(report)
    assert report.cause_ids[0] == "bad_initialization", report.format_text()
    cause = report.causes[0]
    assert "conv.lin.weight" in cause.evidence and "lin.weight (1x16) all 0" in cause.evidence
    assert "conv.lin.weight" in cause.fix
    if "vanishing_gradients" in report.cause_ids:  # a consequence, ranked as one
        assert report.causes[report.cause_ids.index("vanishing_gradients")].score <= 0.5


def test_constant_weights_lists_identical_units_and_skips_biases_and_scales():
    net = nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3), nn.Linear(3, 2), nn.Linear(2, 1))
    with torch.no_grad():
        net[2].weight.copy_(torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]))  # identical rows
        net[3].weight.fill_(0.5)
        net[0].bias.zero_()
    found = {c["name"]: c["kind"] for c in constant_weights(net)}
    assert found == {"2.weight": "identical rows", "3.weight": "all 0.5"}
    shares = [c["share"] for c in constant_weights(net)]
    assert shares == pytest.approx([6 / 20, 2 / 20])
    assert constant_weights(nn.Linear(4, 3)) == []  # default initialisation


class DeadReluHead(nn.Module):
    """A user's GCN whose head ReLU never fires (its input shifted far below 0, as after a
    learning-rate spike): every score the same."""

    def __init__(self, in_channels: int, hidden: int = 16) -> None:
        super().__init__()
        self.conv = GCNConv(in_channels, hidden)
        self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        with torch.no_grad():
            self.head[0].bias.fill_(-100.0)

    def forward(self, x, edge_index, batch):
        return self.head(global_mean_pool(self.conv(x, edge_index).relu(), batch))


def test_a_dead_relu_in_a_users_head_is_dead_activations_named_by_the_trace(zoo_set):
    report = diagnose(zoo_set, model=DeadReluHead(zoo_set.num_features), options=FAST)
    assert report.cause_ids[0] == "dead_activations", report.format_text()
    cause = report.causes[0]
    assert "head.1 (ReLU)" in cause.evidence and "head.1 (ReLU)" in cause.fix
    assert cause.measured["culprit"]["path"] == "head.1"
    trace = report.to_dict()["trace"]["init"]
    assert trace["culprit"]["cause"] == "dead_activations" and trace["scores_constant"]
    head = next(m for m in trace["modules"] if m["path"] == "head.1")
    assert head["zero_fraction"] == 1.0 and head["constant"]
    assert "signal trace at initialisation" in report.format_text()
    assert "<- culprit (dead_activations)" in report.format_text()


def test_a_healthy_models_trace_is_in_the_report_without_a_culprit(zoo_set):
    report = diagnose(zoo_set, options=DoctorOptions(heldout=False))
    assert report.verdict == "healthy"
    trace = report.to_dict()["trace"]
    assert set(trace) == {"init"}  # no trace after a passing overfit run
    assert trace["init"]["culprit"] is None and trace["init"]["scores_std"] > 0.01
    assert all(m["graph_std"] > 0 for m in trace["init"]["modules"])
    assert "no layer makes them constant" in report.format_text()
