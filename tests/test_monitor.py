"""gatrank.Monitor, the issue's loop as a user writes it: exported lazily by the package, its
records with the update ratios, the runbook's verdict, the doctor's reading with what it saw
(an optimizer over part of the model names frozen_parameters and the parameters), and the live
curves fed at each record."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
import torch
from torch_geometric.loader import DataLoader

import gatrank
from gatrank.checks.verdict import Verdict
from gatrank.config import ModelConfig
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
