"""The doctor end to end: manifests, graphs in memory and a user's own model and loss go
through the same stages, which stop as soon as the answer is clear; a finished run's history is
read without training; the CLI writes a report with evidence and a fix for each cause.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch_geometric.data import Data

from gatrank.checks.probes import ModelProbe
from gatrank.cli import main
from gatrank.config import Config, overfit_config
from gatrank.data import GraphSet
from gatrank.doctor import diagnose, diagnose_history
from gatrank.doctor.faults import FAULTS, inject
from gatrank.model import build_model
from gatrank.training import train
from gatrank.training.monitor import NonFiniteStep

# --------------------------------------------------------------------------- helpers


def _write_manifest(root: Path, graphs: list[tuple[np.ndarray, np.ndarray]]) -> Path:
    rows = []
    for i, (x, ei) in enumerate(graphs):
        np.savez(root / f"g{i}.npz", x=x, edge_index=ei)
        rows.append({"id": f"g{i}", "path": f"g{i}.npz", "y": float(i)})
    manifest = root / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest


def _path(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    src = np.arange(n - 1)
    ei = np.concatenate([np.stack([src, src + 1]), np.stack([src + 1, src])], 1)
    return rng.normal(size=(n, 3)).astype(np.float32), ei.astype(np.int64)


def _small_set(k: int = 24) -> GraphSet:
    """Graphs whose target is the sum of their node features: learnable by a GAT."""
    graphs, ys = [], []
    for i in range(k):
        x, ei = _path(4 + i % 4, i)
        y = float(x.sum())
        ys.append(y)
        graphs.append(Data(x=torch.from_numpy(x), edge_index=torch.from_numpy(ei),
                           y=torch.tensor([y]), group=torch.tensor([-1]), idx=torch.tensor([i]),
                           gid=f"g{i}", smiles=""))
    table = pd.DataFrame({"id": [f"g{i}" for i in range(k)], "y": ys, "split": None,
                          "group": None})
    return GraphSet(graphs, table, 3, Path("manifest.csv"))


# --------------------------------------------------------------------------- a user's model


@pytest.mark.slow
def test_user_model_that_cannot_fit_is_compared_with_gatranks_gat(zoo_set, check_report):
    report = diagnose(zoo_set, model="custom_plugins:MeanPooledLinear")
    assert report.verdict == "cannot_fit"
    assert report.cause_ids[0] == "insufficient_capacity", report.format_text()
    names = [s.name for s in report.stages]
    assert "ablation: gatrank's GAT in place of your model" in names
    assert not any("GATv2" in n or "default depth" in n for n in names)  # GAT-only ablations
    check_report(report)


# --------------------------------------------------------------------------- stages that stop early


def test_manifest_problems_are_causes_with_rows(tmp_path, check_report):
    graphs = [_path(5, i) for i in range(6)]
    graphs[2][0][1, 1] = np.nan
    graphs[4] = (graphs[4][0], np.zeros((2, 0), dtype=np.int64))
    report = diagnose(manifest=_write_manifest(tmp_path, graphs))
    assert report.verdict == "bad_data"
    assert set(report.cause_ids) == {"nan_or_inf_inputs", "empty_graphs"}
    by_id = {c.id: c for c in report.causes}
    assert "g2" in by_id["nan_or_inf_inputs"].evidence and "line 4" in \
        by_id["nan_or_inf_inputs"].evidence
    assert "g4" in by_id["empty_graphs"].evidence
    assert [s.name for s in report.stages] == ["data"]  # stopped: nothing was trained
    check_report(report)


def test_in_memory_graphs_are_validated_too():
    gs = _small_set()
    gs.graphs[3].x[0, 0] = float("inf")
    report = diagnose(gs)
    assert report.cause_ids == ["nan_or_inf_inputs"]


def test_user_model_by_import_string_without_a_gradient_path(check_report):
    report = diagnose(_small_set(), model="custom_plugins:DetachedScores")
    assert report.cause_ids[0] == "loss_detached"
    assert report.setup["model"] == "custom_plugins:DetachedScores"
    assert report.stages[-1].name == "model"
    check_report(report)


def test_user_loss_by_import_string_in_the_wrong_direction(check_report):
    report = diagnose(_small_set(), loss="custom_plugins:reversed_margin_loss")
    assert report.verdict == "broken_loss"
    assert report.cause_ids == ["loss_wrong_direction"]
    check_report(report)


# --------------------------------------------------------------------------- history only


@pytest.mark.slow
def test_diagnose_history_reads_a_finished_run(check_report):
    gs = _small_set()
    cfg = overfit_config(Config(), 16).updated({"training.epochs": 30})
    inj = inject("dead_relu_head", gs, cfg)
    def dead_model(c: int) -> nn.Module:
        return inj.model_edit(build_model(c, inj.config.model))

    dead = train(inj.config, graphs=gs, model=dead_model, progress=False,
                 probes=[ModelProbe()])
    report = diagnose_history(dead.history, config=inj.config)
    assert report.verdict == "collapsed"
    assert report.cause_ids[0] == "dead_activations"
    assert all(c.score < 0.95 for c in report.causes)  # suspected: nothing was ablated
    check_report(report)
    healthy = train(overfit_config(Config(), 16).updated({"training.epochs": 150}), graphs=gs,
                    progress=False)
    report = diagnose_history(healthy.history)
    assert report.runbook_verdict["passed"]
    assert report.verdict == "healthy" and report.causes == []


def test_diagnose_history_needs_a_record():
    with pytest.raises(ValueError, match="at least one logged record"):
        diagnose_history([])


def _flat(epochs: int = 3) -> list[dict]:
    return [{"epoch": e, "loss": 0.6931, "pairwise_accuracy": 0.5, "spearman": 0.0,
             "score_std": 0.5, "grad_norm": 0.3} for e in range(1, epochs + 1)]


def test_diagnose_history_reads_the_learning_rate_the_run_logged():
    report = diagnose_history([{**r, "lr": 1e-7} for r in _flat()])  # default config: 1e-3
    low = next(c for c in report.causes if c.id == "learning_rate_too_low")
    assert "at learning rate 1e-07" in low.evidence


def test_diagnose_history_reads_a_monitors_findings_as_the_model_stage():
    """What a Monitor saw in the loop: parameters the optimizer does not hold or that never got
    a gradient (frozen_parameters, named), a NaN loss at the very first step."""
    frozen = {"frozen": [], "not_in_optimizer": ["convs.0.lin.weight"],
              "trainable_fraction": 0.2, "num_parameters": 100}
    numel = {"convs.0.lin.weight": 60, "head.weight": 20, "head.bias": 20}
    report = diagnose_history(_flat(), findings={"frozen": frozen, "numel": numel,
                                                 "unused": ["head.bias"], "nonfinite": []})
    cause = report.causes[0]
    assert (cause.id, cause.score) == ("frozen_parameters", 0.9)
    assert cause.evidence.startswith("2 of 3 parameter tensors (convs.0.lin.weight, head.bias)")
    assert cause.measured["frozen_fraction"] == pytest.approx(0.8)
    nan_first = NonFiniteStep(epoch=1, step=0, loss=float("nan"))
    report = diagnose_history(_flat(), findings={
        "frozen": {**frozen, "not_in_optimizer": []}, "numel": numel, "unused": [],
        "nonfinite": [nan_first]})
    assert report.verdict == "unstable"
    assert "exploding_gradients" in report.cause_ids
    assert "non-finite loss at epoch 1, batch 0" in " ".join(c.evidence for c in report.causes)


# --------------------------------------------------------------------------- CLI


def test_cli_lists_the_fault_zoo(capsys):
    assert main(["doctor", "--list-faults"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in FAULTS)
    line = next(ln for ln in out.splitlines() if ln.startswith("layernorm_one_head "))
    assert "(gatrank.doctor.buggy:LayerNormScoreHead)" in line  # the user code it runs


def test_cli_writes_a_report_for_a_user_model(tmp_path, capsys):
    manifest = _write_manifest(tmp_path, [_path(5, i) for i in range(8)])
    out = tmp_path / "report.json"
    rc = main(["doctor", "-q", "--manifest", str(manifest), "--model",
               "custom_plugins:DetachedScores", "--json", str(out)])
    assert rc == 1
    report = json.loads(out.read_text())
    assert report["verdict"] == "broken_loss"
    top = report["causes"][0]
    assert top["id"] == "loss_detached" and top["evidence"] and top["fix"]
    assert "loss_detached" in capsys.readouterr().out


def test_cli_rejects_an_unknown_fault(tmp_path, capsys):
    manifest = _write_manifest(tmp_path, [_path(5, i) for i in range(8)])
    assert main(["doctor", "--manifest", str(manifest), "--inject", "nope"]) == 2
    assert "shuffled_labels" in capsys.readouterr().err
