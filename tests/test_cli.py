"""The command line's reliability flags: --resume, --on-error, --overfit-n checks, exit codes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from custom_plugins import interrupting_loss

from gatrank.cli import main
from gatrank.config import Config, ConfigError, overfit_config
from gatrank.training.checkpoint import read_checkpoint

TINY = ("model:\n  hidden_dim: 8\n  heads: 2\n  num_layers: 1\n"
        "training:\n  batch_size: 4\n  log_every: 1\n  device: cpu\n  patience: 0\n")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def data(tmp_path) -> Path:
    """Eight tiny graph files with a train/test split and a small config beside them."""
    rows = []
    for i in range(8):
        x = torch.rand(3 + i % 3, 2, generator=torch.Generator().manual_seed(i))
        n = x.shape[0]
        a = torch.arange(n - 1)
        torch.save({"x": x, "edge_index": torch.stack([torch.cat([a, a + 1]),
                                                       torch.cat([a + 1, a])])},
                   tmp_path / f"g{i}.pt")
        rows.append(f"g{i},{i * 0.5},g{i}.pt,{'test' if i >= 6 else 'train'}")
    (tmp_path / "manifest.csv").write_text("\n".join(["id,y,path,split", *rows]) + "\n")
    (tmp_path / "tiny.yaml").write_text(TINY)
    return tmp_path


def _train(data: Path, out: str, *extra: str) -> int:
    return main(["train", "--manifest", str(data / "manifest.csv"), "--config",
                 str(data / "tiny.yaml"), "--out", str(data / out), "--no-progress",
                 "--no-baseline", "-q", *extra])


def test_help_shows_the_reliability_flags(capsys):
    for argv, flags in ((["train", "--help"], ["--resume", "--on-error", "--debug"]),
                        (["check-data", "--help"], ["--on-error", "--allow-outside-root"])):
        with pytest.raises(SystemExit) as stop:
            main(argv)
        assert stop.value.code == 0
        out = capsys.readouterr().out
        assert all(f in out for f in flags), argv


def test_cli_resume_continues_exactly(data):
    assert _train(data, "straight", "--epochs", "4") == 0
    assert _train(data, "run", "--epochs", "2") == 0
    # --resume alone: config, model and output folder come from the checkpoint
    assert main(["train", "--resume", str(data / "run" / "last.pt"), "--epochs", "4",
                 "--no-progress", "--no-baseline", "-q"]) == 0
    a, b = (read_checkpoint(data / d / "last.pt") for d in ("straight", "run"))
    assert a["epoch"] == b["epoch"] == 4
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    summary = json.loads((data / "run" / "summary.json").read_text())
    assert summary["epochs_run"] == 4 and summary["resumed_from"].endswith("last.pt")
    epochs = [json.loads(ln)["epoch"]
              for ln in (data / "run" / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3, 4]


def test_cli_resume_without_a_path_continues_outs_last_pt(data, capsys):
    assert _train(data, "straight", "--epochs", "3") == 0
    assert _train(data, "run", "--epochs", "2") == 0
    assert main(["train", "--resume", "--out", str(data / "run"), "--epochs", "3",
                 "--no-progress", "--no-baseline", "-q"]) == 0
    a, b = (read_checkpoint(data / d / "last.pt") for d in ("straight", "run"))
    assert a["epoch"] == b["epoch"] == 3
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    summary = json.loads((data / "run" / "summary.json").read_text())
    assert summary["resumed_from"] == str(data / "run" / "last.pt")
    capsys.readouterr()
    assert main(["train", "--resume", "--epochs", "3"]) == 2
    assert "--resume without a path resumes --out's last.pt: pass --out RUN_DIR" in (
        capsys.readouterr().err)
    assert main(["train", "--resume", "--out", str(data / "empty")]) == 2
    assert f"--resume {data / 'empty' / 'last.pt'}: no such file" in capsys.readouterr().err


def test_interrupted_run_exits_130_and_says_how_to_resume(data, capsys):
    interrupting_loss.calls, interrupting_loss.at = 0, 5  # 2 batches per epoch: during epoch 3
    code = _train(data, "run", "--epochs", "6", "--loss", "custom_plugins:interrupting_loss")
    err = capsys.readouterr().err
    assert code == 130
    assert "Ctrl-C during epoch 3; kept the state after epoch 2" in err
    assert f"gatrank train --resume {data / 'run' / 'last.pt'}" in err
    assert "Traceback" not in err
    ckpt = read_checkpoint(data / "run" / "last.pt")
    assert ckpt["status"] == "interrupted" and ckpt["epoch"] == 2
    interrupting_loss.at = None
    assert main(["train", "--resume", str(data / "run" / "last.pt"), "--loss",
                 "custom_plugins:interrupting_loss", "--no-progress", "--no-baseline", "-q"]) == 0
    assert json.loads((data / "run" / "summary.json").read_text())["epochs_run"] == 6


def test_notebooks_command_presets_and_never_overwrites(data, capsys):
    dest = data / "nb"
    assert main(["notebooks", str(dest), "--manifest", str(data / "manifest.csv"), "-q"]) == 0
    out = capsys.readouterr().out
    assert f"wrote 11 files to {dest}" in out and f"cd {dest} && gatrank suite" in out
    assert str(data / "manifest.csv") in (dest / "params" / "01_data_checks.yaml").read_text()
    before = (dest / "params" / "01_data_checks.yaml").read_text()
    assert main(["notebooks", str(dest), "--model", "linear"]) == 2
    err = capsys.readouterr().err
    assert "11 file(s) exist" in err and str(dest / "notebooks" / "05_eval.ipynb") in err
    assert (dest / "params" / "01_data_checks.yaml").read_text() == before
    assert main(["notebooks", str(dest), "--model", "linear", "--force", "-q"]) == 0
    assert 'model: "linear"' in (dest / "params" / "01_data_checks.yaml").read_text()
    with pytest.raises(SystemExit):
        main(["notebooks", str(dest), "--manifest", "m.csv", "--dataset", "mod:ds"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_check_data_on_error_skip_and_json_report(data, capsys):
    with open(data / "manifest.csv", "a") as fh:
        fh.write("bad1,nan,g0.pt,train\nbad2,1,nowhere.pt,train\n")
    assert main(["check-data", "--manifest", str(data / "manifest.csv"), "--json",
                 str(data / "report.json")]) == 1
    report = json.loads((data / "report.json").read_text())
    assert not report["ok"]
    assert sorted((p["line"], p["id"], p["code"]) for p in report["problems"]) == [
        (10, "bad1", "nan_target"), (11, "bad2", "missing_file")]
    capsys.readouterr()
    assert main(["check-data", "--manifest", str(data / "manifest.csv"),
                 "--on-error", "skip"]) == 0
    assert "would drop 2 row(s) (lines 10, 11) and keep 8 graphs" in capsys.readouterr().out


@pytest.mark.parametrize("n", ["1", "-3"])
def test_overfit_n_below_two_is_a_clear_error(data, capsys, n):
    assert _train(data, "run", "--overfit-n", n) == 2
    err = capsys.readouterr().err
    assert f"--overfit-n {n}" in err and "allowed 0 (off) or >= 2" in err


def test_stop_at_verdict_needs_the_overfit_test(data, capsys):
    assert _train(data, "run", "--stop-at-verdict") == 2
    err = capsys.readouterr().err
    assert "--stop-at-verdict" in err and "--overfit-n N" in err and "Traceback" not in err


def test_stop_at_verdict_ends_the_overfit_test_and_says_where(data, capsys):
    out = data / "run"
    assert _train(data, "run", "--overfit-n", "8", "--epochs", "300", "--stop-at-verdict") == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_run"] < 300
    assert f"every pass criterion held at epoch {summary['epochs_run']}" in printed
    assert "verdict: PASS" in printed


@pytest.mark.parametrize("n", [0, 1, -5, 2.5, True])
def test_overfit_config_rejects_n_below_two(n):
    with pytest.raises(ConfigError, match=r"overfit n = .* allowed an integer >= 2"):
        overfit_config(Config(), n)


def test_overfit_config_accepts_two():
    assert overfit_config(Config(), 2).training.overfit_n == 2


def test_config_errors_do_not_wait_for_torch(tmp_path):
    """A typo in the config is reported before the (seconds-long) torch import."""
    (tmp_path / "bad.yaml").write_text("training:\n  batch_size: 1\n")
    code = ("import sys; from gatrank.cli import main; "
            "rc = main(['train', '--config', 'bad.yaml']); "
            "print(rc, 'torch' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.stdout.split() == ["2", "False"], res.stderr
    assert "training.batch_size" in res.stderr and "Traceback" not in res.stderr


def test_notebooks_command_does_not_wait_for_torch(tmp_path):
    """Copying the notebooks imports neither torch nor nbformat (seconds each)."""
    code = ("import sys; from gatrank.cli import main; rc = main(['notebooks', 'nb', '-q']); "
            "print(rc, 'torch' in sys.modules, 'nbformat' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60)
    assert res.stdout.split()[-3:] == ["0", "False", "False"], res.stderr
    assert len(list((tmp_path / "nb").rglob("*.ipynb"))) == 5


# --------------------------------------------------------------------------- a user's PyG model

POOLING = "pooling without the batch vector"


def test_train_names_a_model_pooling_without_batch(data, capsys):
    rc = main(["train", "--manifest", str(data / "manifest.csv"), "--overfit-n", "8",
               "--epochs", "2", "--model", "custom_plugins:NoBatchPool", "--no-progress", "-q"])
    err = capsys.readouterr().err
    assert rc == 1, err
    assert "scores are not one per graph" in err and POOLING in err
    assert "returned scores of shape [1] for a batch of 8 graphs" in err
    assert "Traceback" not in err and "global_mean_pool(x, batch)" in err


def test_doctor_reports_a_model_pooling_without_batch(data, capsys):
    out = data / "report.json"
    rc = main(["doctor", "-q", "--manifest", str(data / "manifest.csv"), "--n", "8",
               "--model", "custom_plugins:NoBatchPool", "--json", str(out)])
    text = capsys.readouterr()
    assert rc == 1 and "Traceback" not in text.err
    assert POOLING in text.out and "score_shape_mismatch" in text.out
    report = json.loads(out.read_text())
    assert report["verdict"] == "cannot_fit"
    stage = report["stages"][-1]
    assert stage["name"] == "model" and stage["status"] == "failed"
    assert stage["summary"]["score_shape"] == "[1]"
    (cause,) = report["causes"]
    assert cause["id"] == "score_shape_mismatch" and POOLING in cause["fix"]
    assert re.search(r"model stage .*NoBatchPool returned scores of shape \[1\] for a batch of "
                     r"\d+ graphs", cause["evidence"])


def test_model_kwargs_train_and_eval_rebuild_the_same_model(data, capsys):
    from custom_plugins import PyGGCN

    from gatrank.evaluate import load_checkpoint

    kwargs = '{"hidden_channels": 6}'
    assert _train(data, "gcn", "--epochs", "2", "--model", "custom_plugins:PyGGCN",
                  "--model-kwargs", kwargs) == 0
    ckpt = read_checkpoint(data / "gcn" / "best.pt")
    assert ckpt["config"]["model"]["kwargs"] == {"hidden_channels": 6}
    net, config, _ = load_checkpoint(data / "gcn" / "best.pt")
    assert isinstance(net, PyGGCN) and net.lin.in_features == 6 and net.lin.out_features == 1
    assert list(net.state_dict()) == list(ckpt["state_dict"])  # the user's own names
    for k, v in net.state_dict().items():
        assert torch.equal(v, ckpt["state_dict"][k]), k
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(data / "gcn" / "best.pt"), "--no-baselines",
                 "-q"]) == 0
    assert "split: test (2 graphs)" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--model", "custom_plugins:PyGGCN", "--model-kwargs", "{hidden: 6}"], "not valid JSON"),
    (["--model", "custom_plugins:PyGGCN", "--model-kwargs", "[6]"], "must be a mapping"),
    (["--model-kwargs", '{"hidden_channels": 6}'], "needs --model package.module:Name"),
    (["--model", "custom_plugins:PyGGCN"], "needs hidden_channels. Pass hidden_channels in "
                                            "--model-kwargs"),
])
def test_model_kwargs_mistakes_are_usage_errors(data, capsys, argv, message):
    assert _train(data, "run", "--epochs", "1", *argv) == 2
    err = capsys.readouterr().err
    assert "config error" in err and message in err


@pytest.mark.slow
def test_attentive_fp_by_import_string_passes_the_overfit_test(tmp_path, capsys):
    """PyG's AttentiveFP as it is: edge_dim and out_channels filled in, forward(x, edge_index,
    edge_attr, batch) called by name. The runbook's test runs 500 epochs (90 s here); its
    criteria are met from epoch 50, so 100 epochs (15 s) keep a margin."""
    from gatrank.data import load_graphs
    from gatrank.datasets import manifest_or_default
    from gatrank.evaluate import load_checkpoint
    from gatrank.metrics import ranking_metrics
    from gatrank.training import predict

    kwargs = '{"hidden_channels": 64, "num_layers": 2, "num_timesteps": 2}'
    out = tmp_path / "afp"
    rc = main(["train", "--overfit-n", "32", "--epochs", "100", "--model",
               "torch_geometric.nn.models:AttentiveFP", "--model-kwargs", kwargs,
               "--out", str(out), "--no-progress", "-q"])
    text = capsys.readouterr().out
    assert rc == 0 and "verdict: PASS" in text, text
    summary = json.loads((out / "summary.json").read_text())
    final = summary["final"]
    assert final["pairwise_accuracy"] > 0.9 and final["spearman"] > 0.8
    assert final["score_std"] > 0.1
    # eval rebuilds the same model from the checkpoint: the same scores on the same graphs
    net, config, ckpt = load_checkpoint(out / "last.pt")
    assert (type(net).__name__, net.edge_dim, net.out_channels) == ("AttentiveFP", 30, 1)
    assert ckpt["edge_dim"] == 30 and config.model.kwargs["num_timesteps"] == 2
    gs = load_graphs(manifest_or_default(config.data.manifest))
    scores = predict(net, [gs[i] for i in range(32)], torch.device("cpu"))
    again = ranking_metrics(scores["scores"], scores["targets"], tie_eps=config.loss.tie_eps)
    assert again["pairwise_accuracy"] == pytest.approx(final["pairwise_accuracy"], abs=1e-6)
    assert again["score_std"] == pytest.approx(final["score_std"], rel=1e-5)


def test_train_and_eval_report_the_fitted_baselines_and_the_models_lead(tmp_path, capsys):
    rows = []
    for c in range(2, 17):  # a lone carbon has no bond: message passing refuses it
        for k, (end, bonus) in enumerate((("O", 1.0), ("N", 0.0), ("", 0.0))):
            split = ("test" if c % 5 == 0 else "val" if c % 5 == 1 else "train")
            rows.append(f"m{c}_{k},{c + bonus},{'C' * c + end},{split}")
    (tmp_path / "manifest.csv").write_text("\n".join(["id,y,smiles,split", *rows]) + "\n")
    (tmp_path / "tiny.yaml").write_text(TINY + "  epochs: 2\n")
    assert main(["train", "--manifest", str(tmp_path / "manifest.csv"), "--config",
                 str(tmp_path / "tiny.yaml"), "--out", str(tmp_path / "run"), "--no-progress",
                 "-q"]) == 0
    out = capsys.readouterr().out
    for name in ("linear", "fingerprint"):
        line = next(ln for ln in out.splitlines() if ln.startswith(f"{name} baseline test:"))
        assert re.search(r"the model (beats|loses to|shows no difference from) the "
                         rf"{name} baseline .*95% interval", line), line
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["baselines"]["linear"]["fit"]["converged"]
    assert main(["eval", "--checkpoint", str(tmp_path / "run" / "best.pt"), "--out",
                 str(tmp_path / "ev")]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^fingerprint +\d", out, re.M) and re.search(r"^linear +\d", out, re.M)
    assert len(re.findall(r"^the model .* baseline .*\d+ graphs\)$", out, re.M)) == 2
    assert "with 95% bootstrap intervals over the split's graphs:" in out
    assert re.search(r"^model +-?\d\.\d{3} \[-?\d\.\d{3}, -?\d\.\d{3}\] ", out, re.M), out
    written = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert set(written["margins"]) == {"linear", "fingerprint"}
    assert set(written["intervals"]) == {"model", "constant", "random", "linear", "fingerprint"}


def test_eval_on_graph_files_says_why_there_is_no_fingerprint_baseline(data, capsys):
    assert _train(data, "run") == 0
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(data / "run" / "best.pt"), "--split", "all"]) == 0
    out = capsys.readouterr().out
    assert "fingerprint baseline skipped: the graphs have no SMILES" in out
    assert "linear" in out
