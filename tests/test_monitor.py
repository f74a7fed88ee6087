"""gatrank.Monitor, the issue's loop as a user writes it: exported lazily by the package, its
records with the update ratios, the runbook's verdict, the doctor's reading with what it saw
(an optimizer over part of the model names frozen_parameters and the parameters), and the live
curves fed at each record. A run over more graphs per epoch than an overfit test is judged as
training (the runbook's Step 3), on the validation scores the loop reports; a small one is
still judged by the overfit test's thresholds."""

from __future__ import annotations

import logging
import math
import os
import subprocess
import sys

import pytest
import torch
from torch import nn
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

import gatrank
from gatrank.checks.verdict import (
    OVERFIT_MAX_GRAPHS,
    OVERFIT_TEST,
    TRAINING,
    Verdict,
    evaluate_verdict,
)
from gatrank.config import ModelConfig
from gatrank.doctor import diagnose_history
from gatrank.losses import pairwise_rank_loss
from gatrank.model import GATRanker

pytestmark = pytest.mark.usefixtures("one_thread")


def _loop(model, optimizer, graphs, epochs: int, monitor) -> None:
    """The issue's loop, line for line."""
    loader = DataLoader(list(graphs), batch_size=4, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    for _ in range(epochs):
        for batch in loader:
            scores = model(batch)
            loss = pairwise_rank_loss(scores, batch.y).loss
            optimizer.zero_grad()
            loss.backward()
            monitor.step(scores, batch.y, loss)  # after backward()
            optimizer.step()
        monitor.end_epoch()


def _model(graphs) -> GATRanker:
    torch.manual_seed(0)
    return GATRanker(graphs[0].num_features,
                     ModelConfig(hidden_dim=8, heads=2, num_layers=2, dropout=0.0))


def test_import_gatrank_stays_light_and_exports_the_monitor_lazily():
    code = ("import sys, gatrank; light = 'torch' not in sys.modules; "
            "from gatrank import Monitor; print(light, Monitor.__module__)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.stdout.split() == ["True", "gatrank.monitor"], res.stderr
    assert "Monitor" in dir(gatrank)
    with pytest.raises(AttributeError, match="no attribute 'Monitr'"):
        gatrank.Monitr  # noqa: B018


def test_the_issues_loop_gives_records_a_verdict_and_a_reading(make_graphs, tmp_path):
    graphs = make_graphs(k=8)
    model = _model(graphs)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.03)
    monitor = gatrank.Monitor(model, optimizer=optimizer, log_every=10,
                              out_dir=tmp_path / "mine")
    _loop(model, optimizer, graphs, 30, monitor)
    assert [r["epoch"] for r in monitor.history] == [1, 10, 20, 30]
    first, last = monitor.history[0], monitor.history[-1]
    # update ratios as ModelProbe records them: since the previous record, none at the first
    assert first["update_ratio"] is None and first["update_ratio_per_layer"] == {}
    assert set(last["update_ratio_per_layer"]) == set(last["grad_norm_per_layer"])
    assert last["update_ratio"] > 0 and last["lr"] == 0.03
    verdict = monitor.verdict()
    assert isinstance(verdict, Verdict) and verdict.passed
    assert str(verdict).startswith("verdict: PASS\n  [ok ] pairwise accuracy > 0.9")
    # 8 graphs an epoch: an overfit test, judged exactly as gatrank verdict judges its log
    assert monitor.graphs_per_epoch == 8 and verdict.judged_as == OVERFIT_TEST
    assert verdict.to_dict() == evaluate_verdict(monitor.history).to_dict()
    reading = monitor.diagnose()
    assert reading.verdict == "healthy" and reading.causes == [] and reading.notes == []
    assert str(reading).startswith("verdict: HEALTHY")


def test_an_optimizer_over_part_of_the_model_is_named_as_frozen_parameters(make_graphs,
                                                                           caplog):
    graphs = make_graphs(k=8)
    model = _model(graphs)
    # the user's bug: an optimizer built over the output bias only, so nothing can rank
    optimizer = torch.optim.Adam([model.score_head[3].bias], lr=0.03)
    with caplog.at_level(logging.WARNING, logger="gatrank.monitor"):
        monitor = gatrank.Monitor(model, optimizer=optimizer, log_every=5)
    assert len(caplog.records) == 1
    held_out = [n for n, _ in model.named_parameters() if n != "score_head.3.bias"]
    assert ", ".join(held_out[:8]) in caplog.records[0].getMessage()
    _loop(model, optimizer, graphs, 10, monitor)
    assert not monitor.verdict().passed
    reading = monitor.diagnose()
    frozen = next(c for c in reading.causes if c.id == "frozen_parameters")
    assert reading.causes[0] is frozen and frozen.score >= 0.9
    assert f"{len(held_out)} of {len(held_out) + 1} parameter tensors" in frozen.evidence
    assert "convs.0.att_dst" in frozen.evidence
    assert monitor.findings()["frozen"]["not_in_optimizer"] == held_out


def test_a_healthy_run_with_a_parameter_left_out_says_so_in_the_notes(make_graphs):
    graphs = make_graphs(k=8)
    model = _model(graphs)
    left_out = model.score_head[1].bias  # the LayerNorm's shift: training passes without it
    optimizer = torch.optim.Adam([p for p in model.parameters() if p is not left_out], lr=0.03)
    monitor = gatrank.Monitor(model, optimizer=optimizer, log_every=10)
    _loop(model, optimizer, graphs, 30, monitor)
    reading = monitor.diagnose()
    assert reading.verdict == "healthy" and reading.causes == []
    assert any("frozen_parameters" in n and "score_head.1.bias" in n for n in reading.notes)


def test_live_curves_get_every_record_and_no_record_is_an_error(make_graphs):
    graphs = make_graphs(k=8)
    model = _model(graphs)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.03)
    monitor = gatrank.Monitor(model, optimizer=optimizer, log_every=2, epochs=5)
    with pytest.raises(ValueError, match=r"call monitor.end_epoch\(\)"):
        monitor.verdict()
    _loop(model, optimizer, graphs, 1, monitor)
    monitor.live()  # after the first record: it is drawn from the history so far
    _loop(model, optimizer, graphs, 4, monitor)
    assert monitor.curves is not None
    assert monitor.curves.history == monitor.history
    assert [r["epoch"] for r in monitor.history] == [1, 2, 4, 5]
    assert monitor.curves.kwargs["thresholds"]["pairwise_accuracy"] == 0.9


# --------------------------------------------------------------------------- a training run


def _planted_loop(monitor, model, optimizer, *, graphs: int, epochs: int = 3, batch: int = 50,
                  validation: bool = True, seed: int = 0) -> None:
    """A loop whose scores rank as well as planted: score = a * y + noise + the model's output,
    ``a`` rising over the epochs so that pairwise accuracy (0.5 + arctan(a) / pi) goes from
    about 0.6 to 0.8, where a model trained on many graphs with dropout may well stay; the
    validation scores, planted the same way, reach Spearman ~0.7."""
    gen = torch.Generator().manual_seed(seed)
    for e in range(epochs):
        a = math.tan(math.pi * (0.1 + 0.2 * e / (epochs - 1)))
        for start in range(0, graphs, batch):
            n = min(batch, graphs - start)
            y, x = torch.randn(n, generator=gen), torch.randn(n, 4, generator=gen)
            scores = a * y + torch.randn(n, generator=gen) + model(x).reshape(-1)
            loss = pairwise_rank_loss(scores, y).loss
            optimizer.zero_grad()
            loss.backward()
            monitor.step(scores, y, loss)
            optimizer.step()
        if validation:
            y = torch.randn(100, generator=gen)
            monitor.validation(a * y + torch.randn(100, generator=gen), y)
        monitor.end_epoch()


def _planted_monitor(graphs: int, **kwargs) -> gatrank.Monitor:
    torch.manual_seed(kwargs.get("seed", 0))
    model = nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    monitor = gatrank.Monitor(model, optimizer=optimizer, log_every=1,
                              num_graphs=kwargs.pop("num_graphs", None))
    _planted_loop(monitor, model, optimizer, graphs=graphs, **kwargs)
    return monitor


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("validation", [True, False])
def test_a_training_size_loop_is_judged_as_training_and_is_healthy(validation, seed):
    monitor = _planted_monitor(200, validation=validation, seed=seed)
    assert monitor.graphs_per_epoch == 200
    assert ("val_spearman" in monitor.history[-1]) is validation
    verdict = monitor.verdict()
    assert verdict.passed and verdict.judged_as == TRAINING and verdict.validated is validation
    assert str(verdict).splitlines()[-1] == f"  {verdict.thresholds}"
    assert "judged as training (200 graphs per epoch" in verdict.thresholds
    reading = monitor.diagnose()
    assert reading.verdict == "healthy" and reading.causes == []
    assert reading.notes == [verdict.thresholds]
    assert reading.runbook_verdict == verdict.to_dict()
    # the healthy twin: the same records under the overfit test's thresholds fail
    assert not evaluate_verdict(monitor.history).passed
    assert diagnose_history(monitor.history).verdict != "healthy"


def test_a_32_graph_loop_is_still_judged_as_an_overfit_test():
    monitor = _planted_monitor(32)
    verdict = monitor.verdict()
    assert monitor.graphs_per_epoch == 32 <= OVERFIT_MAX_GRAPHS
    assert verdict.judged_as == OVERFIT_TEST and not verdict.passed  # 0.8 is not > 0.9
    assert verdict.to_dict() == evaluate_verdict(monitor.history).to_dict()
    assert "judged as an overfit test" in str(verdict).splitlines()[-1]
    reading = monitor.diagnose()
    assert reading.verdict != "healthy" and reading.runbook_verdict == verdict.to_dict()
    assert not any("judged as" in n for n in reading.notes)


def test_num_graphs_overrides_the_count_and_must_be_positive():
    monitor = _planted_monitor(32, num_graphs=813)
    assert monitor.graphs_per_epoch == 813 and monitor.recorder.graphs_per_epoch == 32
    assert monitor.verdict().judged_as == TRAINING
    assert "(813 graphs per epoch" in monitor.verdict().thresholds
    with pytest.raises(ValueError, match=r"num_graphs = 0.*len\(loader.dataset\)"):
        gatrank.Monitor(nn.Linear(4, 1), num_graphs=0)


def _rec(epoch, loss, pa, sp, std, gn, **val):
    return {"epoch": epoch, "loss": loss, "pairwise_accuracy": pa, "spearman": sp,
            "score_std": std, "grad_norm": gn, **{f"val_{k}": v for k, v in val.items()}}


def test_a_collapsed_training_run_still_gets_its_causes():
    hist = [_rec(e, 0.6931, 0.5, 0.01, 1e-5, 1e-6) for e in (1, 10, 20)]
    reading = diagnose_history(hist, graphs_per_epoch=813)
    assert reading.verdict == "collapsed"
    assert reading.cause_ids[0] == "vanishing_gradients"
    assert reading.runbook_verdict["judged_as"] == TRAINING
    assert reading.runbook_verdict["label"] == "FAIL (red flags)"
    assert {"score_collapsed", "spearman_none", "no_gradients"} <= set(
        reading.runbook_verdict["red_flags"])
    assert reading.notes[0].startswith("judged as training (813 graphs per epoch")
    # the same run judged as an overfit test reads the same (today's default)
    assert diagnose_history(hist).cause_ids == reading.cause_ids


def test_a_training_run_at_chance_on_validation_keeps_the_no_signal_path():
    """Training metrics rise, validation Spearman never leaves chance: no_signal, as for an
    overfit-size run, although the training verdict fails on validation."""
    hist = [_rec(1, 0.66, 0.60, 0.30, 0.3, 0.4, pairwise_accuracy=0.50, spearman=0.05,
                 score_std=0.3),
            _rec(10, 0.30, 0.85, 0.80, 0.9, 0.3, pairwise_accuracy=0.51, spearman=0.10,
                 score_std=0.9),
            _rec(20, 0.10, 0.95, 0.93, 1.5, 0.2, pairwise_accuracy=0.50, spearman=0.02,
                 score_std=1.4)]
    for graphs in (813, None):
        reading = diagnose_history(hist, graphs_per_epoch=graphs)
        assert reading.verdict == "no_generalization"
        assert reading.cause_ids == ["no_signal"]
        assert "validation Spearman 0.020" in reading.causes[0].evidence
    assert not diagnose_history(hist, graphs_per_epoch=813).runbook_verdict["passed"]


class _Paths(list):
    """Path graphs whose target is a function of their node features (a signal a GAT learns),
    with a little noise."""

    def __init__(self, k: int, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        for _ in range(k):
            n = int(torch.randint(4, 9, (1,), generator=gen))
            x = torch.randn(n, 4, generator=gen)
            src = torch.arange(n - 1)
            ei = torch.cat([torch.stack([src, src + 1]), torch.stack([src + 1, src])], 1)
            y = x[:, 0].mean() + 0.5 * x[:, 1].max() + 0.1 * torch.randn(1, generator=gen)
            self.append(Data(x=x, edge_index=ei, y=y.reshape(1)))


@pytest.mark.slow
def test_a_real_training_loop_with_dropout_and_validation_is_healthy():
    """The issue's case in small: a GAT with dropout trained on 160 graphs, validated each
    epoch. Its training-mode batch scores stay below the overfit test's 0.9 and it is healthy."""
    train, val = _Paths(160, seed=0), _Paths(60, seed=1)
    torch.manual_seed(0)
    model = GATRanker(4, ModelConfig(hidden_dim=16, heads=2, num_layers=2, dropout=0.2))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    monitor = gatrank.Monitor(model, optimizer=optimizer, log_every=5, epochs=15)
    loader = DataLoader(train, batch_size=16, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    val_batch = next(iter(DataLoader(val, batch_size=len(val))))
    for _ in range(15):
        model.train()
        for batch in loader:
            scores = model(batch)
            loss = pairwise_rank_loss(scores, batch.y).loss
            optimizer.zero_grad()
            loss.backward()
            monitor.step(scores, batch.y, loss)
            optimizer.step()
        model.eval()
        with torch.no_grad():
            monitor.validation(model(val_batch), val_batch.y)
        monitor.end_epoch()
    assert monitor.graphs_per_epoch == 160
    assert monitor.history[-1]["pairwise_accuracy"] < 0.9
    verdict = monitor.verdict()
    assert verdict.judged_as == TRAINING and verdict.passed, str(verdict)
    assert not evaluate_verdict(monitor.history).passed
    assert monitor.diagnose().verdict == "healthy"
