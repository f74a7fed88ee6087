"""Training end to end on a small slice of the embedded data (marked slow: seconds each), and
run-to-run reproducibility."""

from __future__ import annotations

import json
import re
import sys

import numpy as np
import pytest
import torch
import torch_geometric
from tiny_training import assert_same_run, strip, tiny

from gatrank.checks.verdict import evaluate_verdict, stop_at_verdict
from gatrank.config import Config, overfit_config
from gatrank.data import load_graphs
from gatrank.datasets import write_dataset
from gatrank.evaluate import evaluate_checkpoint
from gatrank.offline import plotly_js_bytes
from gatrank.runtime import environment_info
from gatrank.training import train
from gatrank.training.checkpoint import read_checkpoint


@pytest.fixture(scope="module")
def chembl_small(tmp_path_factory):
    root = tmp_path_factory.mktemp("chembl")
    manifest = write_dataset("chembl-activity", root, n=96, seed=0)
    return manifest, load_graphs(manifest, cache_dir=root / "cache")


@pytest.mark.slow
def test_overfit_mode_reaches_the_runbook_thresholds(chembl_small):
    _, gs = chembl_small
    cfg = overfit_config(Config(), n=16).updated({"training.epochs": 150})
    res = train(cfg, graphs=gs, progress=False)
    verdict = evaluate_verdict(res.history)
    assert verdict.passed, verdict.to_dict()
    assert verdict.red_flags == []
    assert res.history[-1]["pairwise_accuracy"] > 0.95
    assert res.history[-1]["score_std"] > 0.1
    assert res.summary["split_sizes"] == {"train": 16, "val": 0, "test": 0}
    # Logged every 10 epochs, plus the first.
    assert [h["epoch"] for h in res.history[:3]] == [1, 10, 20]


@pytest.mark.slow
def test_stop_at_verdict_ends_the_overfit_test_at_the_first_passing_epoch(chembl_small,
                                                                          tmp_path):
    """The same run as the full one up to the first logged epoch where every criterion holds,
    then stopped there: same records, same verdict, status completed, the reason recorded."""
    _, gs = chembl_small
    cfg = overfit_config(Config(), n=16).updated({"training.epochs": 150})
    full = train(cfg, graphs=gs, progress=False)
    first = evaluate_verdict(full.history)
    assert first.passed and first.epochs_to_pass < 150
    short = train(cfg, graphs=gs, progress=False, out_dir=tmp_path, stop_when=stop_at_verdict)
    stop = next(i for i in range(2, len(full.history) + 1)
                if evaluate_verdict(full.history[:i]).passed)
    assert strip(short.history) == strip(full.history[:stop])
    s = short.summary
    assert s["status"] == "completed" and s["epochs_run"] == full.history[stop - 1]["epoch"]
    assert f"at epoch {s['epochs_run']}" in s["stop_reason"]
    assert evaluate_verdict(short.history).passed
    assert json.loads((tmp_path / "summary.json").read_text())["stop_reason"] == s["stop_reason"]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    logged = [json.loads(ln)["epoch"] for ln in lines]
    assert logged[-1] == s["epochs_run"]
    assert read_checkpoint(tmp_path / "last.pt")["status"] == "completed"


def test_a_run_writes_only_the_checkpoints_it_is_asked_for(graphs, tmp_path):
    cfg = tiny(training__epochs=3)
    train(cfg, graphs=graphs, progress=False, out_dir=tmp_path / "none", checkpoints=())
    assert sorted(p.name for p in (tmp_path / "none").iterdir()) == ["metrics.jsonl",
                                                                     "summary.json"]
    train(cfg, graphs=graphs, progress=False, out_dir=tmp_path / "best", checkpoints=["best.pt"],
          with_baseline=True)
    assert not list((tmp_path / "best").rglob("last.pt"))
    # the baselines are fitted in closed form or by L-BFGS: no training run, no checkpoint
    assert {p.relative_to(tmp_path / "best").as_posix()
            for p in (tmp_path / "best").rglob("*.pt")} == {"best.pt"}
    with pytest.raises(ValueError, match=r"unknown checkpoint\(s\) \['final.pt'\]"):
        train(cfg, graphs=graphs, progress=False, checkpoints=["final.pt"])


def test_a_stop_rule_is_asked_after_every_logged_epoch_only(graphs):
    seen: list[int] = []

    def rule(history):
        seen.append(history[-1]["epoch"])
        return "enough" if history[-1]["epoch"] >= 4 else None

    res = train(tiny(training__epochs=9, training__log_every=2, data__val_fraction=0.0,
                     data__test_fraction=0.0), graphs=graphs, progress=False, stop_when=rule)
    assert seen == [1, 2, 4]
    assert res.summary["epochs_run"] == 4 and res.summary["stop_reason"] == "enough"


@pytest.mark.slow
def test_full_training_writes_metrics_checkpoints_and_baseline(chembl_small, tmp_path):
    manifest, gs = chembl_small
    cfg = Config().updated({"training.epochs": 4, "training.log_every": 2,
                            "data.manifest": str(manifest)})
    res = train(cfg, graphs=gs, out_dir=tmp_path, progress=False, with_baseline=True)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["epoch"] for r in records] == [1, 2, 4]
    required = {"epoch", "loss", "pairwise_accuracy", "spearman", "score_mean", "score_std",
                "grad_norm", "grad_norm_per_layer", "val_pairwise_accuracy", "val_spearman",
                "val_score_std"}
    assert required <= set(records[0])
    assert set(records[0]["grad_norm_per_layer"]) >= {"convs.0", "score_head.0"}
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["mode"] == "full"
    assert summary["seed"] == 0 and "torch" in summary["versions"]
    assert set(summary["test"]) >= {"spearman", "pairwise_accuracy", "kendall"}
    assert "spearman" in summary["baseline"]["test"]
    fitted = summary["baselines"]
    assert set(fitted) == {"linear", "fingerprint"} and fitted["linear"]["fit"]["converged"]
    for b in fitted.values():
        m = b["margin"]
        assert m["low"] <= m["difference"] <= m["high"]
        assert m["difference"] == pytest.approx(
            summary["test"]["spearman"] - b["test"]["spearman"], abs=1e-5)
    assert sum(summary["split_sizes"].values()) == len(gs)
    ckpt = read_checkpoint(tmp_path / "best.pt")
    assert {"state_dict", "config", "metrics", "epoch"} <= set(ckpt)
    assert ckpt["config"]["training"]["epochs"] == 4
    assert res.summary["best_epoch"] >= 1

    ev = evaluate_checkpoint(tmp_path / "best.pt", manifest, split="test", out_dir=tmp_path / "ev")
    assert len(ev.predictions) == summary["split_sizes"]["test"]
    assert ev.metrics["spearman"] == pytest.approx(summary["test"]["spearman"], abs=1e-6)
    assert set(ev.baselines) == {"constant", "random", "linear", "fingerprint"}
    assert set(ev.margins) == {"linear", "fingerprint"} == set(ev.baseline_fits)
    assert ev.baselines["constant"]["pairwise_accuracy"] == 0.5
    # every scorer's interval is around its own metric on the split
    assert set(ev.intervals) == {"model", *ev.baselines}
    for who, per in ev.intervals.items():
        got = ev.metrics if who == "model" else ev.baselines[who]
        for metric in ("spearman", "pairwise_accuracy"):
            iv = per[metric]
            assert iv["value"] == pytest.approx(got[metric])
            assert iv["low"] <= iv["value"] <= iv["high"]
    assert ev.interval_table().loc["constant", "pairwise_accuracy"] == "0.500 [0.500, 0.500]"
    html = (tmp_path / "ev" / "scatter.html").read_text()
    # plotly.js is embedded: no external <script src=...> (the bundle itself mentions its CDN
    # only as a default for map data, which these plots do not use).
    assert re.search(r"<script[^>]*\bsrc=", html) is None
    assert "Plotly.newPlot" in html
    # in a report folder: one shared plotly.min.js, loaded by a relative path
    shared = tmp_path / "report"
    evaluate_checkpoint(tmp_path / "best.pt", manifest, split="test", baselines=False,
                        out_dir=shared / "05_eval", shared_plotly_js=shared)
    light = (shared / "05_eval" / "scatter.html").read_text()
    assert re.findall(r"<script[^>]*\bsrc=\"([^\"]+)\"", light) == ["../plotly.min.js"]
    assert len(light) < len(html) / 20 and "Plotly.newPlot" in light
    assert (shared / "plotly.min.js").read_bytes() == plotly_js_bytes()


@pytest.mark.slow
def test_user_model_and_loss_by_import_string(chembl_small):
    _, gs = chembl_small
    cfg = overfit_config(Config(), n=16).updated({"training.epochs": 30})
    res = train(cfg, graphs=gs, model="custom_plugins:SumModel", loss="custom_plugins:hinge_loss",
                progress=False)
    assert type(res.model).__name__ == "SumModel"
    assert res.history[-1]["loss"] < res.history[0]["loss"]
    assert res.history[0]["valid_pairs_mean"] > 0
    assert "emb_std" not in res.history[0]  # no embed() hook on this model


@pytest.mark.slow
def test_no_valid_pairs_is_visible_in_the_records(chembl_small):
    _, gs = chembl_small
    cfg = overfit_config(Config(), n=8).updated({"training.epochs": 10,
                                                 "loss.tie_eps": 100.0})
    res = train(cfg, graphs=gs, progress=False)
    assert all(h["valid_pairs_mean"] == 0 for h in res.history)
    assert all(h["batches_without_pairs"] >= 1 for h in res.history)
    assert all(h["grad_norm"] == 0 for h in res.history)


@pytest.mark.usefixtures("one_thread")
def test_same_seed_gives_identical_metrics_and_weights(graphs):
    a = train(tiny(), graphs=graphs, progress=False)
    b = train(tiny(), graphs=graphs, progress=False)
    assert_same_run(a, b)
    c = train(tiny(training__seed=1), graphs=graphs, progress=False)
    assert any(not torch.equal(v, c.model.state_dict()[k]) for k, v in a.model.state_dict().items())


@pytest.mark.usefixtures("one_thread")
def test_summary_records_seed_versions_and_config(graphs, reference):
    _, out = reference
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seed"] == tiny().training.seed
    assert summary["config"] == tiny().to_dict()
    assert Config.from_dict(summary["config"]) == tiny()
    versions = summary["versions"]
    assert versions == environment_info()
    assert versions["torch"] == torch.__version__
    assert versions["torch_geometric"] == torch_geometric.__version__
    assert versions["numpy"] == np.__version__
    assert versions["python"] == ".".join(map(str, sys.version_info[:3]))
