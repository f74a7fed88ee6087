"""`gatrank verdict RUN`: the runbook's verdict and the doctor's reading of a run that already
happened; exit 0 on pass, 1 on fail, 2 on a missing or malformed log (named by file and line).
A Monitor's run is read with its findings.json (what monitor.diagnose() reads: frozen
parameters, non-finite steps, graphs per epoch); a gatrank train run over more than an overfit
test's graphs is judged as training, by Step 3."""

from __future__ import annotations

import json
import logging
import re

import pytest
import torch
from torch import nn
from torch_geometric.loader import DataLoader

import gatrank
from gatrank.checks.static import frozen_parameters
from gatrank.checks.verdict import evaluate_run, format_verdict
from gatrank.cli import main
from gatrank.config import Config, ModelConfig
from gatrank.doctor import diagnose_history
from gatrank.io import append_jsonl
from gatrank.losses import pairwise_rank_loss
from gatrank.model import GATRanker
from gatrank.training.findings_file import write_findings
from gatrank.training.monitor import NonFiniteStep

SETTINGS = {"training.learning_rate": 0.03, "training.weight_decay": 0.0}


def _history(learns: bool) -> list[dict]:
    """Ten logged epochs: a run that fits (loss falls, ranking near perfect, scores spread), or
    one that collapses to constant scores with zero gradients at the loss of ln 2."""
    out = []
    for k in range(10):
        e = 1 + 10 * k
        if learns:
            r = {"loss": 0.69 * (1 - 0.09 * k), "pairwise_accuracy": 0.6 + 0.04 * k,
                 "spearman": 0.3 + 0.07 * k, "score_std": 0.05 + 0.1 * k, "grad_norm": 0.5}
        else:
            r = {"loss": 0.6931, "pairwise_accuracy": 0.5, "spearman": 0.0, "score_std": 1e-5,
                 "grad_norm": 1e-7}
        out.append({"epoch": e, **r})
    return out


def test_a_passing_run_exits_0_and_prints_the_verdict_and_reading(tmp_path, capsys):
    append_jsonl(tmp_path / "metrics.jsonl", _history(learns=True))
    assert main(["verdict", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "10 records, last epoch 91" in out
    assert "verdict: PASS" in out and "verdict: HEALTHY" in out


def test_a_collapsed_run_exits_1_with_its_red_flags_and_causes(tmp_path, capsys):
    log = tmp_path / "metrics.jsonl"
    append_jsonl(log, _history(learns=False))
    assert main(["verdict", str(log)]) == 1
    out = capsys.readouterr().out
    assert "verdict: FAIL (red flags)" in out and "[FLAG] score std < 0.01" in out
    assert "verdict: COLLAPSED" in out and "vanishing_gradients" in out


@pytest.mark.parametrize(("content", "named"), [
    (None, "no such file"),
    ('{"epoch": 1, "loss": 0.6}\n', "line 1: no 'pairwise_accuracy'"),
    ('{"epoch": 1, "loss": 0.6, "pairwise_accuracy": 0.5, "spearman": 0, "score_std": 1, '
     '"grad_norm": 1}\nnot json\n', "line 2: not valid JSON"),
])
def test_a_missing_or_malformed_log_exits_2_naming_file_and_line(tmp_path, capsys, content,
                                                                 named):
    log = tmp_path / "metrics.jsonl"
    if content is not None:
        log.write_text(content)
    assert main(["verdict", str(log)]) == 2
    err = capsys.readouterr().err
    assert str(log) in err and named in err


def _untimed(text: str) -> str:
    """A report's text without its timings (``(0.0 s)``, ``0.0s``), which differ run to run."""
    return re.sub(r"\d+\.\d ?s\b", "#s", text)


def _part_of_the_model() -> dict:
    """What Monitor.findings() holds for an optimizer over the output bias of a small model."""
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    optimizer = torch.optim.Adam([model[2].bias], lr=0.03)
    return {"frozen": frozen_parameters(model, optimizer), "unused": [],
            "numel": {n: p.numel() for n, p in model.named_parameters()},
            "nonfinite": [], "nonfinite_count": 0}


def _cause_block(text: str, cause: str) -> str:
    """The lines of one cause in a report's text: its rank and id, evidence, fix."""
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if re.match(rf" \d+\. {cause}  ", line))
    return "\n".join(lines[at:at + 3])


def test_a_monitors_findings_name_the_frozen_parameters_as_diagnose_history_does(tmp_path,
                                                                                 capsys):
    history, findings = _history(learns=False), _part_of_the_model()
    append_jsonl(tmp_path / "metrics.jsonl", history)
    write_findings(tmp_path, graphs_per_epoch=8, config=SETTINGS, findings=findings)
    assert main(["verdict", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    expected = diagnose_history(history, config=Config().updated(SETTINGS), findings=findings,
                                graphs_per_epoch=8).format_text()
    frozen = _cause_block(expected, "frozen_parameters")
    assert "0.2, 2.bias" not in frozen and "add to the optimizer 0.bias, 0.weight" in frozen
    assert frozen in out
    assert _untimed(expected) in _untimed(out)
    assert f"with what the Monitor saw ({tmp_path / 'findings.json'})" in out


def test_a_monitors_nonfinite_step_reads_back_in_the_doctors_words(tmp_path, capsys):
    history = _history(learns=False)
    findings = {**_part_of_the_model(), "frozen": frozen_parameters(nn.Linear(2, 1)),
                "nonfinite": [NonFiniteStep(1, 0, float("nan"))], "nonfinite_count": 1}
    append_jsonl(tmp_path / "metrics.jsonl", history)
    write_findings(tmp_path, graphs_per_epoch=8, config=SETTINGS, findings=findings)
    assert main(["verdict", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    # the doctor reads the first step's epoch and batch from its words
    assert "non-finite loss at epoch 1, batch 0 (loss=nan) — at the very first step" in out
    expected = diagnose_history(history, config=Config().updated(SETTINGS), findings=findings,
                                graphs_per_epoch=8)
    assert _untimed(expected.format_text()) in _untimed(out)


def _train_summary(mode: str, train: int) -> dict:
    return {"mode": mode, "status": "completed", "split_sizes": {"train": train, "val": 0,
                                                                  "test": 0}}


@pytest.mark.parametrize(("files", "judged"), [
    ({"findings": 200}, "judged as training (200 graphs per epoch"),
    ({"summary": _train_summary("full", 200)}, "judged as training (200 graphs per epoch"),
    ({"summary": _train_summary("overfit", 100)}, "judged as an overfit test"),
    ({"findings": 32}, "judged as an overfit test"),
    ({}, "judged as an overfit test"),
])
def test_the_graphs_per_epoch_decide_whose_thresholds_judge_the_run(tmp_path, capsys, files,
                                                                     judged):
    history = _history(learns=True)
    append_jsonl(tmp_path / "metrics.jsonl", history)
    if "findings" in files:
        write_findings(tmp_path, graphs_per_epoch=files["findings"], config={}, findings={})
    if "summary" in files:
        (tmp_path / "summary.json").write_text(json.dumps(files["summary"]))
    assert main(["verdict", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    graphs = files.get("findings") or (200 if judged.startswith("judged as training") else None)
    verdict = format_verdict(evaluate_run(history, graphs_per_epoch=graphs))
    assert verdict in out and verdict.splitlines()[-1].strip().startswith(judged)


def test_a_malformed_findings_file_is_warned_about_and_the_log_judged_alone(tmp_path, capsys,
                                                                           caplog):
    """As a summary.json that is not JSON: the log is judged, the bad file named."""
    append_jsonl(tmp_path / "metrics.jsonl", _history(learns=True))
    (tmp_path / "findings.json").write_text(
        '{"format": 1, "graphs_per_epoch": "many", "config": {}, "findings": {}}')
    with caplog.at_level(logging.WARNING):
        assert main(["verdict", str(tmp_path)]) == 0
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned == [f"{tmp_path / 'findings.json'}: graphs_per_epoch = 'many': expected a "
                      "positive integer (the graphs one epoch trains on) or null; judging "
                      f"{tmp_path / 'metrics.jsonl'} alone"]
    out = capsys.readouterr().out
    assert "judged as an overfit test" in out and "with what the Monitor saw" not in out


@pytest.mark.parametrize(("bug", "cause"), [("optimizer_over_the_bias", "frozen_parameters"),
                                            ("no_zero_grad", "gradients_accumulate")])
def test_verdict_on_a_monitor_run_shows_what_monitor_diagnose_shows(make_graphs, tmp_path,
                                                                    capsys, bug, cause):
    graphs = make_graphs(k=8)
    torch.manual_seed(0)
    model = GATRanker(graphs[0].num_features,
                      ModelConfig(hidden_dim=8, heads=2, num_layers=2, dropout=0.0))
    # an optimizer built over the output bias only, so nothing can rank; or no zero_grad
    optimizer = torch.optim.Adam([model.score_head[3].bias] if bug == "optimizer_over_the_bias"
                                 else model.parameters(), lr=0.03)
    monitor = gatrank.Monitor(model, optimizer=optimizer, log_every=5, out_dir=tmp_path)
    loader = DataLoader(graphs, batch_size=4, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    for _ in range(10):
        for batch in loader:
            scores = model(batch)
            loss = pairwise_rank_loss(scores, batch.y).loss
            if bug != "no_zero_grad":
                optimizer.zero_grad()
            loss.backward()
            monitor.step(scores, batch.y, loss)
            optimizer.step()
        monitor.end_epoch()
    reading = monitor.diagnose()
    assert cause in [c.id for c in reading.causes[:2]]
    code = main(["verdict", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == (0 if monitor.verdict().passed else 1)
    assert format_verdict(monitor.verdict()) in out
    assert _untimed(str(reading)) in _untimed(out)
