"""gatrank.notebook.results and NotebookRun.record: a verdict's Check objects are recorded as the
same dicts the hand-written ``[dict(vars(c)) for c in verdict.checks]`` gave, and each notebook's
record holds the keys it held before."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from gatrank.checks.verdict import Check, Verdict
from gatrank.config import Config
from gatrank.notebook.display import checks_table
from gatrank.notebook.results import (
    baseline_table,
    check_dicts,
    checkpoint_check,
    eval_results,
    full_train_results,
    init_loss_metrics,
    overfit_results,
    training_outcome,
)
from gatrank.notebook.session import NotebookRun

CHECK = Check(name="spearman", kind="pass", rule="Spearman > 0.8", value=0.5, ok=False)
FLAG = {"name": "score_collapsed", "kind": "red_flag", "rule": "score std < 0.01",
        "value": 0.2, "ok": True, "detail": "fine"}


def test_check_dicts_takes_a_verdicts_checks_and_keeps_dicts_as_they_are():
    out = check_dicts([CHECK, FLAG])
    assert out == [dict(vars(CHECK)), FLAG] and out[1] is FLAG
    assert check_dicts([]) == []


def test_checks_table_takes_check_objects_like_dicts():
    pd.testing.assert_frame_equal(checks_table([CHECK, FLAG]),
                                  checks_table([dict(vars(CHECK)), FLAG]))
    assert list(checks_table([CHECK])["result"]) == ["FAIL"]


def test_record_writes_check_objects_as_dicts(tmp_path):
    run = NotebookRun(name="03_overfit", run_dir=tmp_path, config=Config(), graphs=[1, 2, 3],
                      manifest=Path("m.csv"), model="", loss="", seed=0)
    out = run.record([CHECK, FLAG], metrics={"x": float("nan")})
    assert out == json.loads((tmp_path / "03_overfit.results.json").read_text())
    assert out["checks"] == [dict(vars(CHECK)), FLAG]
    assert (out["passed"], out["label"], out["num_graphs"]) == (False, "FAIL", 3)
    assert out["step"] == "Step 1: overfit test" and out["metrics"] == {"x": None}


def _train_result() -> SimpleNamespace:
    summary = {"final": {"loss": 0.1, "spearman": 0.9, "epoch": 60}, "epochs_run": 60,
               "wall_time_s": 1.5, "best_epoch": 7, "best_val_spearman": 0.81234,
               "stop_reason": "", "test": {"spearman": 0.8}, "split_sizes": {"train": 3},
               "baseline": {"test": {"spearman": 0.3}}}
    return SimpleNamespace(summary=summary)


def test_overfit_results_hold_the_verdict_the_final_metrics_and_the_causes():
    verdict = Verdict(passed=False, checks=[CHECK])
    cause = SimpleNamespace(to_dict=lambda: {"id": "learning_rate_too_low"})
    out = overfit_results(_train_result(), verdict, SimpleNamespace(causes=[cause]), n=8)
    assert list(out) == ["verdict", "metrics", "n", "epochs_run", "train_time_s", "causes",
                         "fixes"]
    assert out["verdict"] == verdict.to_dict()
    assert out["metrics"] == {"loss": 0.1, "spearman": 0.9}  # logged keys only, not "epoch"
    assert (out["n"], out["epochs_run"], out["train_time_s"]) == (8, 60, 1.5)
    assert out["causes"] == [{"id": "learning_rate_too_low"}]
    assert out["fixes"] == []  # no verifying doctor ran
    # with the verifying doctor's report: a row per cause it judged, its status in words
    verified = SimpleNamespace(id="learning_rate_too_low", verification={
        "status": "verified", "epoch": 40, "pairwise_accuracy": 0.95, "spearman": 0.93,
        "score_std": 1.5, "fix": {"label": "training.learning_rate 1e-07 -> 0.005"}})
    human = SimpleNamespace(id="loss_detached", verification={
        "status": "human", "fix": {"label": "edit the loss", "human": "your loss detaches"}})
    untried = SimpleNamespace(id="no_signal", verification=None)
    report = SimpleNamespace(causes=[verified, human, untried])
    rows = overfit_results(_train_result(), verdict, SimpleNamespace(causes=[cause]), n=8,
                           fixes=report)["fixes"]
    assert [(r["cause"], r["result"]) for r in rows] == [
        ("learning_rate_too_low", "verified"), ("loss_detached", "needs you")]
    assert rows[0]["fix"] == "training.learning_rate 1e-07 -> 0.005" and rows[0]["epoch"] == 40
    assert rows[1]["fix"] == "your loss detaches" and rows[1]["spearman"] is None


def test_full_training_record_line_table_and_checkpoint_check(tmp_path):
    result = _train_result()
    ckpt = tmp_path / "best.pt"
    out = full_train_results(result, ckpt)
    assert list(out) == ["checkpoint", "best_epoch", "best_val_spearman", "epochs_run",
                         "stop_reason", "train_time_s", "metrics", "baseline", "split_sizes"]
    assert out["baseline"] == {"spearman": 0.3} and out["metrics"] == {"spearman": 0.8}
    assert training_outcome(result.summary) == ("ran all epochs; best epoch 7 (validation "
                                                "Spearman 0.8123); splits {'train': 3}")
    table = baseline_table(result.summary)
    assert list(table.index) == ["model", "linear baseline"]
    assert table.loc["linear baseline", "spearman"] == 0.3
    assert checkpoint_check(ckpt)["ok"] is False
    ckpt.write_bytes(b"")
    assert checkpoint_check(ckpt) == {"name": "checkpoint_saved", "kind": "pass",
                                      "rule": "best checkpoint saved for 05_eval",
                                      "value": None, "ok": True, "detail": str(ckpt)}


def test_init_loss_metrics_and_eval_results():
    init = pd.DataFrame({"loss": [0.6, 0.8], "score_std": [0.1, 0.3], "num_pairs": [5, 3]})
    assert init_loss_metrics(init) == pytest.approx(
        {"init_loss_mean": 0.7, "init_score_std_mean": 0.2, "init_pairs_min": 3})
    margin = {"difference": 0.2, "low": 0.1, "high": 0.3, "level": 0.95, "n": 50,
              "better": True, "worse": False}
    res = SimpleNamespace(metrics={"spearman": 0.5}, baselines={"random": {}}, split="test",
                          grouped=None, baseline_fits={"linear": {"l2": 0.01}},
                          margins={"linear": margin})
    out = eval_results(res, checkpoint=Path("best.pt"), source="given")
    assert out == {"metrics": {"spearman": 0.5}, "baselines": {"random": {}}, "split": "test",
                   "checkpoint": Path("best.pt"), "checkpoint_source": "given",
                   "grouped_mean": None, "baseline_fits": {"linear": {"l2": 0.01}},
                   "margins": {"linear": margin}}
    assert eval_results(SimpleNamespace(**{**vars(res), "grouped": {"mean": {"a": 1}}}),
                        checkpoint=Path("x"), source="s")["grouped_mean"] == {"a": 1}


def test_a_run_read_from_a_log_alone_is_recorded_and_where_it_came_from(tmp_path):
    """What gatrank.training.history.read_run gives for a Monitor's log: no validation, no
    test metrics, no baseline, no checkpoint required."""
    summary = {"final": {"loss": 0.1}, "epochs_run": 30, "wall_time_s": 2.0, "best_epoch": 30,
               "best_val_spearman": None, "stop_reason": "", "split_sizes": {},
               "source": "runs/mine/metrics.jsonl"}
    result = SimpleNamespace(summary=summary)
    verdict = Verdict(passed=False, checks=[CHECK])
    out = overfit_results(result, verdict, SimpleNamespace(causes=[]), n=8)
    assert out["read_from"] == "runs/mine/metrics.jsonl"
    full = full_train_results(result, tmp_path / "best.pt")
    assert full["metrics"] == {} and full["baseline"] == {}
    assert full["read_from"] == "runs/mine/metrics.jsonl"
    assert training_outcome(summary) == ("read from runs/mine/metrics.jsonl: ran all epochs; "
                                         "best epoch 30 (no validation); splits {}")
    assert baseline_table(summary).empty
    assert checkpoint_check(tmp_path / "best.pt", required=False)["kind"] == "warning"
