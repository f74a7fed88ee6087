"""Dropout off inside any model for the overfit test (:mod:`gatrank.training.dropout`): every
kind of dropout becomes the identity while the mode is on and is recorded once per site; outside
the mode, or in full training, dropout still fires."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from tiny_graphs import EI4, X4
from tiny_training import strip, tiny
from torch import nn
from torch_geometric.nn import MLP, GATConv, global_mean_pool

from gatrank.cli.train import _print_training
from gatrank.config import overfit_config
from gatrank.training import DropoutOff, format_dropout_off, no_dropout, train

pytestmark = pytest.mark.usefixtures("one_thread")

_SOURCE = Path(__file__).read_text().splitlines()


def _line_of(marker: str) -> int:
    return next(i + 1 for i, text in enumerate(_SOURCE) if text.rstrip().endswith(marker))


def _mode_stack_depth() -> int:
    return torch._C._len_torch_function_stack()


class FunctionalNet(nn.Module):
    """Dropout written in a user's forward: ``F.dropout(x, p, training=self.training)``."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 4)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        return self.lin(F.dropout(x, 0.5, training=self.training))  # site: functional


class Wrap(nn.Module):
    """One submodule ``inner`` called as ``inner(x)`` or ``inner(x, edge_index)``."""

    def __init__(self, inner: nn.Module, graph: bool) -> None:
        super().__init__()
        self.inner, self.graph = inner, graph

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        return self.inner(x, edge_index) if self.graph else self.inner(x)


# (model, expected records: (p, call, kind, module path, module type, user line or None))
CASES = {
    "nn.Dropout": (lambda: Wrap(nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5)), graph=False),
                   [(0.5, "F.dropout", "module", "inner.1", "nn.Dropout", None)]),
    "F.dropout": (FunctionalNet,
                  [(0.5, "F.dropout", "functional", "", "FunctionalNet",
                    _line_of("# site: functional"))]),
    "pyg MLP": (lambda: Wrap(MLP([3, 8, 1], norm=None, dropout=0.5), graph=False),
                [(0.5, "F.dropout", "functional", "inner", "MLP", None)]),
    "GATConv": (lambda: Wrap(GATConv(3, 4, heads=2, dropout=0.5), graph=True),
                [(0.5, "F.dropout", "functional", "inner", "GATConv", None)]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_mode_makes_dropout_the_identity_and_records_each_site_once(case):
    make, expected = CASES[case]
    torch.manual_seed(0)
    model = make().train()
    with DropoutOff(model) as off:
        first, second = model(X4, EI4), model(X4, EI4)
    want = model.eval()(X4, EI4)
    assert torch.equal(first, want) and torch.equal(second, want)
    got = [(r["p"], r["call"], r["kind"], r["module"], r["module_type"], r["line"])
           for r in off.records]
    assert got == expected  # two forward passes, one record per site
    for r in off.records:
        assert r["file"] == (__file__ if r["line"] else None)
    json.dumps(off.records)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("case", list(CASES))
def test_healthy_twin_outside_the_mode_dropout_still_fires(case, seed):
    make, _ = CASES[case]
    torch.manual_seed(seed)
    model = make().train()
    with DropoutOff(model):
        model(X4, EI4)
    assert not torch.equal(model(X4, EI4), model(X4, EI4))


def test_the_lines_name_p_and_module_and_the_user_code_line():
    model = Wrap(MLP([3, 8, 1], norm=None, dropout=0.5), graph=False).train()
    with no_dropout(model) as off:
        model(X4, EI4)
    assert format_dropout_off(off.records) == "dropout 0.5 in inner (MLP): off for the overfit test"
    net = FunctionalNet().train()
    with no_dropout(net) as off:
        net(X4, EI4)
    line = _line_of("# site: functional")
    assert format_dropout_off(off.records) == (
        f"dropout 0.5 in the model (FunctionalNet) at test_dropout_off.py:{line}: off for the "
        "overfit test")
    assert format_dropout_off([]) == ""


def _attention(x: torch.Tensor, p: float) -> torch.Tensor:
    return F.scaled_dot_product_attention(x[None], x[None], x[None], dropout_p=p)[0]


VARIANTS = {  # every dropout function, called in training mode: (p, function of x [4, 3])
    "F.dropout1d": (0.5, lambda x: F.dropout1d(x.view(1, 4, 3), 0.5, training=True)),
    "F.dropout2d": (0.5, lambda x: F.dropout2d(x.view(1, 4, 3, 1), 0.5, training=True)),
    "F.dropout3d": (0.5, lambda x: F.dropout3d(x.view(1, 4, 3, 1, 1), 0.5, training=True)),
    "F.alpha_dropout": (0.3, lambda x: F.alpha_dropout(x, 0.3, training=True)),
    "F.feature_alpha_dropout": (0.3, lambda x: F.feature_alpha_dropout(x.view(1, 4, 3, 1), 0.3,
                                                                       training=True)),
    "torch.dropout": (0.5, lambda x: torch.dropout(x, 0.5, True)),
    "torch.dropout_": (0.5, lambda x: torch.dropout_(x.clone(), 0.5, train=True)),
    "torch.alpha_dropout": (0.5, lambda x: torch.alpha_dropout(x, 0.5, True)),
    "torch.feature_dropout": (0.5, lambda x: torch.feature_dropout(x, 0.5, True)),
    "torch.feature_alpha_dropout": (0.5, lambda x: torch.feature_alpha_dropout(x, 0.5, True)),
    "torch.native_dropout": (0.5, lambda x: torch.native_dropout(x, 0.5, True)[0]),
    "aten.dropout": (0.5, lambda x: torch.ops.aten.dropout.default(x, 0.5, True)),
    # the attention weights' dropout: the output then equals attention without dropout
    "F.scaled_dot_product_attention": (0.5, lambda x: _attention(x, 0.5) - _attention(x, 0.0)
                                       + x),
}


@pytest.mark.parametrize("call", list(VARIANTS))
def test_every_dropout_function_is_switched_off_and_named(call):
    p, fn = VARIANTS[call]
    x = X4 / 10
    torch.manual_seed(0)
    with DropoutOff() as off:
        out = fn(x)
    assert torch.allclose(out.reshape(x.shape), x, atol=1e-6)
    assert [(r["p"], r["call"], r["module"], r["file"]) for r in off.records] == [
        (p, call, None, __file__)]
    torch.manual_seed(0)
    assert not torch.allclose(fn(x).reshape(x.shape), x, atol=1e-6)  # healthy twin


def test_attention_dropout_of_multihead_attention_is_switched_off():
    torch.manual_seed(0)
    model = nn.Module()
    model.attn = nn.MultiheadAttention(3, 1, dropout=0.5).train()
    x = X4 / 10
    with DropoutOff(model) as off:
        got = model.attn(x, x, x)[0]
    assert torch.equal(got, model.attn.eval()(x, x, x)[0])
    assert [(r["p"], r["call"], r["module"], r["module_type"]) for r in off.records] == [
        (0.5, "F.multi_head_attention_forward", "attn", "nn.MultiheadAttention")]


def test_a_model_without_dropout_and_identity_calls_record_nothing():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Dropout(0.0), nn.Linear(4, 1)).train()
    x = X4 / 10
    with DropoutOff(model) as off:
        model(x)
        assert torch.equal(F.dropout(x, 0.5, training=False), x)
        assert torch.equal(nn.Dropout(0.5).eval()(x), x)
        assert torch.equal(F.alpha_dropout(x, 0.5), x)  # training=False by default
        assert torch.equal(torch.dropout(x, 0.5, False), x)
    assert off.records == []


def test_gradients_flow_through_the_identity():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.Linear(4, 1))
    x = (X4 / 10).requires_grad_()
    with DropoutOff(model):
        model.train()(x).sum().backward()
    got = x.grad.clone()
    x.grad = None
    model.eval()(x).sum().backward()
    assert torch.equal(got, x.grad) and bool(got.abs().sum() > 0)


def test_the_mode_is_removed_when_the_forward_raises():
    class Broken(nn.Module):
        def forward(self, x):
            x = F.dropout(x, 0.5, training=True)
            raise RuntimeError("broken forward")

    depth = _mode_stack_depth()
    off = DropoutOff()
    with pytest.raises(RuntimeError, match="broken forward"), off:
        Broken()(X4)
    assert _mode_stack_depth() == depth
    assert len(off.records) == 1
    torch.manual_seed(0)
    assert not torch.equal(F.dropout(X4, 0.5), X4)  # dropout fires again


def test_forward_scope_drops_the_mode_after_a_first_pass_with_nothing_to_switch_off():
    plain = DropoutOff(nn.Linear(3, 1))
    assert plain.forward_scope() is plain
    with plain.forward_scope():
        F.dropout(X4, 0.5, training=False)
    assert plain.forward_scope() is not plain
    dropping = DropoutOff()
    with dropping.forward_scope():
        F.dropout(X4, 0.5, training=True)
    assert all(dropping.forward_scope() is dropping for _ in range(3))


# ------------------------------------------------------------------ in the training loop


class DropNet(nn.Module):
    """A user's model with ``nn.Dropout(0.9)``; logs, per training-mode call, whether its
    dropout changed anything (the eval-mode calls of the probes and scoring are not logged)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.lin, self.drop, self.out = nn.Linear(in_channels, 8), nn.Dropout(0.9), nn.Linear(8, 1)
        self.fired: list[bool] = []
        self.drop.register_forward_hook(self._log)

    def _log(self, module, inputs, output) -> None:
        if module.training:
            self.fired.append(not torch.equal(inputs[0], output))

    def forward(self, x, edge_index, batch):
        return self.out(global_mean_pool(self.drop(torch.relu(self.lin(x))), batch))


def _overfit(**settings):
    return overfit_config(tiny(), 8).updated(
        {"training.epochs": 3, **{k.replace("__", "."): v for k, v in settings.items()}})


def test_the_overfit_test_switches_off_and_records_a_users_dropout(graphs, tmp_path):
    net = DropNet(graphs.num_features)
    res = train(_overfit(), graphs=graphs, model=net, progress=False, out_dir=tmp_path)
    assert net.fired == [False] * 3  # one step per epoch, none with dropout
    want = [{"p": 0.9, "call": "F.dropout", "kind": "module", "module": "drop",
             "module_type": "nn.Dropout", "file": None, "line": None,
             "text": "dropout 0.9 in drop (nn.Dropout): off for the overfit test"}]
    assert res.summary["dropout_off"] == want
    assert json.loads((tmp_path / "summary.json").read_text())["dropout_off"] == want
    assert _mode_stack_depth() == 0


def test_healthy_twin_full_training_keeps_dropout_on_and_records_nothing(graphs):
    net = DropNet(graphs.num_features)
    res = train(tiny(training__epochs=2), graphs=graphs, model=net, progress=False)
    assert net.fired and all(net.fired)
    assert res.summary["dropout_off"] == []


def test_gatranks_own_overfit_test_has_nothing_to_switch_off(graphs):
    res = train(_overfit(), graphs=graphs, progress=False)
    assert res.summary["dropout_off"] == []  # model.dropout: 0 already reaches it


class GATHead(nn.Module):
    """GAT attention dropout and a PyG ``MLP`` head with dropout, both ``p``."""

    def __init__(self, in_channels: int, p: float) -> None:
        super().__init__()
        self.conv = GATConv(in_channels, 8, heads=2, dropout=p)
        self.mlp = MLP([16, 16, 1], dropout=p)

    def forward(self, x, edge_index, batch):
        return self.mlp(global_mean_pool(torch.relu(self.conv(x, edge_index)), batch))


def test_the_overfit_test_of_a_model_with_dropout_equals_it_built_without(graphs):
    """Oracle: dropout off in every step is the same run, weights and records, as the model
    built with dropout 0."""
    runs = {}
    for p in (0.5, 0.0):
        torch.manual_seed(0)
        runs[p] = train(_overfit(training__epochs=5, training__log_every=1), graphs=graphs,
                        model=lambda n, p=p: GATHead(n, p), progress=False)
    assert strip(runs[0.5].history) == strip(runs[0.0].history)
    for k, v in runs[0.0].model.state_dict().items():
        assert torch.equal(runs[0.5].model.state_dict()[k], v), k
    assert [(r["p"], r["module"], r["module_type"]) for r in runs[0.5].summary["dropout_off"]] \
        == [(0.5, "conv", "GATConv"), (0.5, "mlp", "MLP")]
    assert runs[0.0].summary["dropout_off"] == []


class RaisingNet(DropNet):
    def __init__(self, in_channels: int, exc: BaseException, at_call: int) -> None:
        super().__init__(in_channels)
        self.exc, self.at_call, self.calls = exc, at_call, 0

    def forward(self, x, edge_index, batch):
        out = super().forward(x, edge_index, batch)
        if self.training:
            self.calls += 1
            if self.calls == self.at_call:
                raise self.exc
        return out


def test_the_training_step_removes_the_mode_when_the_forward_raises(graphs):
    net = RaisingNet(graphs.num_features, RuntimeError("broken forward"), at_call=2)
    with pytest.raises(RuntimeError, match="broken forward"):
        train(_overfit(), graphs=graphs, model=net, progress=False)
    assert _mode_stack_depth() == 0
    # Ctrl-C in the forward pass: the interrupted run still reports what it switched off
    net = RaisingNet(graphs.num_features, KeyboardInterrupt(), at_call=2)
    res = train(_overfit(), graphs=graphs, model=net, progress=False)
    assert res.summary["status"] == "interrupted" and _mode_stack_depth() == 0
    assert [r["module"] for r in res.summary["dropout_off"]] == ["drop"]


@pytest.mark.parametrize("with_dropout", [True, False])
def test_the_cli_prints_one_line_per_site_before_the_verdict(graphs, capsys, with_dropout):
    net = DropNet(graphs.num_features) if with_dropout else None
    res = train(_overfit(), graphs=graphs, model=net, progress=False)
    _print_training(SimpleNamespace(out=None), res)
    printed = capsys.readouterr().out
    line = "dropout 0.9 in drop (nn.Dropout): off for the overfit test"
    if with_dropout:
        assert printed.index(line) < printed.index("verdict:")
    else:
        assert "off for the overfit test" not in printed
