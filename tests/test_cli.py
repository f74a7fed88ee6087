"""The command line's reliability flags: --resume, --on-error, --overfit-n checks, exit codes."""

from __future__ import annotations

import json
import os
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
    a, b = (safe_torch_load(data / d / "last.pt") for d in ("straight", "run"))
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
