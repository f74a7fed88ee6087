"""gatrank.training.history: a run read back from its files, as train() returned it (the log,
the summary beside it and its config), every malformed log named by file and line, a Monitor's
findings.json found beside the log (a malformed one warned about, a stale one removed by
train), and the graphs per epoch a train summary tells."""

from __future__ import annotations

import json
import logging

import pytest
from tiny_training import strip, tiny

from gatrank.config import Config
from gatrank.io import append_jsonl
from gatrank.training import train
from gatrank.training.findings_file import FINDINGS_FILE, write_findings
from gatrank.training.history import (
    HISTORY_KEYS,
    epoch_graphs,
    read_history,
    read_run,
    run_config,
    run_findings,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_train_run_reads_back_as_train_returned_it(reference):
    result, out = reference
    for where in (out, out / "metrics.jsonl"):
        back = read_run(where)
        assert back.model is None
        assert strip(back.history) == strip(result.history)
        assert back.summary["final"] == json.loads(json.dumps(result.summary["final"]))
        assert back.summary["source"] == str(out / "metrics.jsonl")
    assert run_config(read_run(out).summary) == tiny()


def test_a_log_alone_gets_the_summary_its_history_gives(tmp_path):
    records = [{"epoch": e, "loss": 1.0 / e, "pairwise_accuracy": 0.5, "spearman": 0.1,
                "score_std": 0.2, "grad_norm": 0.1, "time_s": 0.5 * e,
                **({"val_spearman": [0.1, 0.4, 0.3][e - 1]})} for e in (1, 2, 3)]
    append_jsonl(tmp_path / "metrics.jsonl", records)
    s = read_run(tmp_path).summary
    assert (s["epochs_run"], s["best_epoch"], s["best_val_spearman"]) == (3, 2, 0.4)
    assert s["final"] == records[-1] and s["wall_time_s"] == 1.5 and s["status"] == "logged"
    assert run_config(s) == Config()


@pytest.mark.parametrize(("line", "error"), [
    ({"epoch": 2, "loss": 0.4}, r"line 2: no 'pairwise_accuracy', 'spearman'"),
    ({**dict.fromkeys(HISTORY_KEYS, 1.0), "spearman": None}, r"line 2: spearman=None is not"),
    ({**dict.fromkeys(HISTORY_KEYS, 1.0), "epoch": True}, r"line 2: epoch=True is not"),
])
def test_a_bad_record_is_named_by_file_and_line(tmp_path, line, error):
    path = tmp_path / "metrics.jsonl"
    append_jsonl(path, [dict.fromkeys(HISTORY_KEYS, 1.0), line])
    with pytest.raises(ValueError, match=rf"{path}, {error}"):
        read_history(path)


def test_a_missing_or_empty_log_says_what_to_pass(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"holds no metrics.jsonl; pass a run folder"):
        read_history(tmp_path)
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(ValueError, match="holds no record"):
        read_history(tmp_path)


def test_a_run_read_back_finds_its_findings_and_warns_of_a_bad_file(tmp_path, caplog):
    append_jsonl(tmp_path / "metrics.jsonl",
                 [{**dict.fromkeys(HISTORY_KEYS, 0.5), "epoch": e} for e in (1, 2)])
    assert run_findings(read_run(tmp_path)) is None
    write_findings(tmp_path, graphs_per_epoch=200, config={}, findings={})
    assert run_findings(read_run(tmp_path)).graphs_per_epoch == 200
    (tmp_path / FINDINGS_FILE).write_text('{"format": 7}')
    with caplog.at_level(logging.WARNING, logger="gatrank.training.history"):
        assert run_findings(read_run(tmp_path)) is None  # judged alone, as a bad summary.json
    message = caplog.records[-1].getMessage()
    assert str(tmp_path / FINDINGS_FILE) in message and "format 7" in message
    assert f"judging {tmp_path / 'metrics.jsonl'} alone" in message


def test_a_train_run_in_a_monitors_folder_is_not_read_with_its_findings(graphs, tmp_path):
    write_findings(tmp_path, graphs_per_epoch=8, config={}, findings={"unused": ["w"]})
    train(tiny(training__epochs=1), graphs=graphs, progress=False, out_dir=tmp_path,
          with_baseline=False, checkpoints=[])
    assert not (tmp_path / FINDINGS_FILE).exists()
    assert run_findings(read_run(tmp_path)) is None


@pytest.mark.parametrize(("summary", "graphs"), [
    ({"mode": "full", "split_sizes": {"train": 200, "val": 40, "test": 40}}, 200),
    ({"mode": "overfit", "split_sizes": {"train": 100, "val": 0, "test": 0}}, None),
    ({"mode": "logged", "split_sizes": {}}, None),
    ({"mode": "full"}, None),
])
def test_a_train_summary_tells_the_graphs_of_full_training_only(summary, graphs):
    assert epoch_graphs(summary) == graphs
