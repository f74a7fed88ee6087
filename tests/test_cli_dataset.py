"""The command line's ``--dataset``: beside every ``--manifest`` and exclusive with it; a bad
dataset's problems by index and id with the manifest's exit codes; a run on a dataset records it,
so ``eval --checkpoint`` finds the data again; the runbook's overfit test on a PyG
InMemoryDataset of the embedded molecules."""

from __future__ import annotations

import json
import math

import pytest
import torch
from custom_plugins import EmbeddedMolecules, hand_made_graphs

from gatrank.checks.verdict import evaluate_verdict
from gatrank.cli import build_parser, main
from gatrank.cli.train import _train_config

TINY = ("model:\n  hidden_dim: 8\n  heads: 2\n  num_layers: 1\n"
        "training:\n  batch_size: 4\n  log_every: 1\n  device: cpu\n  patience: 0\n")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("command", [["train"], ["eval", "--checkpoint", "x.pt"], ["check-data"],
                                     ["suite"], ["doctor"]])
def test_manifest_and_dataset_together_are_a_usage_error(command, capsys):
    with pytest.raises(SystemExit) as stop:
        main([*command, "--manifest", "m.csv", "--dataset", "custom_plugins:hand_made_list"])
    assert stop.value.code == 2
    assert "argument --dataset: not allowed with argument --manifest" in capsys.readouterr().err


def test_every_command_taking_a_manifest_takes_a_dataset(capsys):
    for command in ("train", "eval", "check-data", "suite", "doctor"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        out = capsys.readouterr().out
        assert "--manifest" in out and "--dataset SPEC" in out, command


def test_a_flag_replaces_the_configs_source(tmp_path):
    (tmp_path / "ds.yaml").write_text("data:\n  dataset: custom_plugins:hand_made_list\n")
    parse = build_parser().parse_args
    cfg = _train_config(parse(["train", "--config", str(tmp_path / "ds.yaml")]))
    assert (cfg.data.manifest, cfg.data.dataset) == ("", "custom_plugins:hand_made_list")
    cfg = _train_config(parse(["train", "--config", str(tmp_path / "ds.yaml"), "--manifest",
                               "m.csv"]))
    assert (cfg.data.manifest, cfg.data.dataset) == ("m.csv", "")
    (tmp_path / "both.yaml").write_text("data:\n  manifest: m.csv\n  dataset: x:y\n")
    assert main(["train", "--config", str(tmp_path / "both.yaml")]) == 2


@pytest.fixture
def bad_dataset(tmp_path) -> str:
    """Eight hand-made graphs, two of them broken (NaN target, integer features)."""
    graphs = hand_made_graphs(8)
    graphs[2].y = torch.tensor([math.nan])
    graphs[5].x = graphs[5].x.long()
    torch.save(graphs, tmp_path / "bad.pt")
    return str(tmp_path / "bad.pt")


def test_check_data_lists_a_datasets_problems_by_index(bad_dataset, tmp_path, capsys):
    assert main(["check-data", "--dataset", bad_dataset, "--json",
                 str(tmp_path / "report.json")]) == 1
    out = capsys.readouterr().out
    assert f"2 error(s), 0 warning(s) in dataset {bad_dataset}" in out
    assert "index  id" in out and "data.x = data.x.float()" in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert sorted((p["index"], p["id"], p["code"]) for p in report["problems"]) == [
        (2, "g2", "nan_target"), (5, "g5", "integer_features")]
    assert report["summary"]["dataset"] == bad_dataset
    assert main(["check-data", "--dataset", bad_dataset, "--on-error", "skip"]) == 0
    assert "would drop 2 graph(s) (indices 2, 5) and keep 6 graphs" in capsys.readouterr().out


def test_train_and_doctor_refuse_a_bad_dataset_naming_the_graphs(bad_dataset, capsys):
    assert main(["train", "--dataset", bad_dataset, "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "data problems" in err and "integer_features" in err and "--on-error skip" in err
    assert main(["doctor", "--dataset", bad_dataset]) == 1
    out = capsys.readouterr().out
    assert "BAD_DATA" in out and "g2 (index 2)" in out and "g5 (index 5)" in out


def test_a_run_on_a_dataset_records_it_and_eval_finds_it(tmp_path, capsys):
    (tmp_path / "tiny.yaml").write_text(TINY)
    spec = "custom_plugins:HandMadeDataset"
    assert main(["train", "--dataset", spec, "--config", str(tmp_path / "tiny.yaml"),
                 "--epochs", "2", "--out", str(tmp_path / "run"), "--no-progress",
                 "--no-baseline", "-q"]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["config"]["data"]["dataset"] == spec and summary["num_graphs"] == 6
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(tmp_path / "run" / "best.pt"), "--split", "all",
                 "--no-baselines", "--out", str(tmp_path / "eval")]) == 0
    assert "split: all (6 graphs)" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["dataset"] == spec and metrics["manifest"] == ""


@pytest.mark.slow
def test_overfit_test_on_an_in_memory_dataset_of_the_embedded_molecules(tmp_path, capsys):
    """The runbook's overfit test, on the user's own PyG InMemoryDataset by import string."""
    spec = "custom_plugins:EmbeddedMolecules"
    assert main(["check-data", "--dataset", spec]) == 0
    assert "0 error(s), 0 warning(s)" in capsys.readouterr().out
    assert main(["train", "--dataset", spec, "--overfit-n", "32", "--out", str(tmp_path),
                 "--no-progress", "-q"]) == 0
    history = [json.loads(ln) for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    verdict = evaluate_verdict(history)
    assert verdict.passed and not verdict.red_flags, verdict
    final = history[-1]  # (the gradient criterion is the median while learning: the verdict's)
    assert final["pairwise_accuracy"] > 0.9 and final["spearman"] > 0.8
    assert final["score_std"] > 0.1
    assert "overfit" in capsys.readouterr().out


@pytest.mark.slow
def test_doctor_reads_an_in_memory_dataset_of_the_embedded_molecules(tmp_path, capsys):
    """gatrank doctor on the same InMemoryDataset: every stage runs on the user's graphs."""
    spec = "custom_plugins:EmbeddedMolecules"
    rc = main(["doctor", "--dataset", spec, "--n", "16", "--json", str(tmp_path / "d.json"),
               "-q"])
    report = json.loads((tmp_path / "d.json").read_text())
    assert rc == (0 if report["verdict"] == "healthy" else 1)
    assert report["setup"]["source"] == f"dataset {spec}"
    stages = {s["name"]: s for s in report["stages"]}
    assert stages["data"]["status"] == "ok" and stages["data"]["summary"]["problems"] == 0
    assert stages["data"]["summary"]["graphs"] == len(EmbeddedMolecules())
    assert stages["overfit"]["status"] == "passed"
    assert report["verdict"] not in ("bad_data", "cannot_fit")
