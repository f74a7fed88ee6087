"""gatrank.training.history: a run read back from its files, as train() returned it (the log,
the summary beside it and its config), and every malformed log named by file and line."""

from __future__ import annotations

import json

import pytest
from tiny_training import strip, tiny

from gatrank.config import Config
from gatrank.io import append_jsonl
from gatrank.training.history import HISTORY_KEYS, read_history, read_run, run_config

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
