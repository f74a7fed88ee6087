"""gatrank.training.findings_file: a Monitor's findings written and read back as they were
(NonFiniteStep objects, NumPy and torch numbers, non-finite floats anywhere, as floats), the
file found beside metrics.jsonl, and every malformed file named with what is wrong."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch

from gatrank.config import Config
from gatrank.training.findings_file import (
    FINDINGS_FILE,
    FORMAT,
    RunFindings,
    findings_path,
    read_findings,
    remove_findings,
    write_findings,
)
from gatrank.training.monitor import NonFiniteStep

SETTINGS = {"training.learning_rate": 0.005, "training.weight_decay": 0.0}


def _findings() -> dict:
    """What Monitor.findings() holds, with the number types a loop gives."""
    return {"frozen": {"frozen": [], "not_in_optimizer": ["lin.weight"],
                       "trainable_fraction": np.float32(0.25), "num_parameters": torch.tensor(8)},
            "unused": ("lin.bias",),
            "numel": {"lin.weight": np.int64(6), "lin.bias": 2},
            "nonfinite": [NonFiniteStep(3, 1, float("nan")), NonFiniteStep(4, 0, float("-inf"))],
            "nonfinite_count": 2,
            # opaque here: the doctor compares its numbers, a NaN included
            "loop": {"grads": {"pairs": 3, "backward_median": np.float64(0.5),
                               "stepped_median": float("nan")}, "lr": {"by_epoch": [(1, 0.1)]}}}


def _write_raw(tmp_path, doc) -> None:
    (tmp_path / FINDINGS_FILE).write_text(doc if isinstance(doc, str) else json.dumps(doc))


def test_findings_read_back_as_the_monitor_held_them(tmp_path):
    path = write_findings(tmp_path, graphs_per_epoch=32, config=SETTINGS, findings=_findings())
    assert path == tmp_path / FINDINGS_FILE
    back = read_findings(tmp_path)
    assert isinstance(back, RunFindings) and back.graphs_per_epoch == 32
    assert back.config == Config().updated(SETTINGS)
    f = back.findings
    assert f["frozen"] == {"frozen": [], "not_in_optimizer": ["lin.weight"],
                           "trainable_fraction": 0.25, "num_parameters": 8}
    assert f["unused"] == ["lin.bias"] and f["numel"] == {"lin.weight": 6, "lin.bias": 2}
    assert f["nonfinite_count"] == 2
    grads = f["loop"]["grads"]
    assert grads["backward_median"] == 0.5 and math.isnan(grads["stepped_median"])
    assert f["loop"]["lr"] == {"by_epoch": [[1, 0.1]]}  # a tuple reads back as a list
    first, second = f["nonfinite"]
    # the doctor formats the first into its error: the same words as the Monitor's object
    assert str(first) == str(NonFiniteStep(3, 1, float("nan"))) == "epoch 3, batch 1 (loss=nan)"
    assert (first.epoch, first.step) == (3, 1) and math.isnan(first.loss)
    assert second == NonFiniteStep(4, 0, float("-inf"))


def test_the_file_is_json_as_python_writes_it_and_found_beside_the_log(tmp_path):
    write_findings(tmp_path, graphs_per_epoch=None, config={}, findings=_findings())
    doc = json.loads((tmp_path / FINDINGS_FILE).read_text())
    assert doc["format"] == FORMAT and doc["graphs_per_epoch"] is None and doc["config"] == {}
    first = doc["findings"]["nonfinite"][0]
    assert list(first) == ["epoch", "step", "loss"] and math.isnan(first["loss"])
    assert doc["findings"]["nonfinite"][1]["loss"] == float("-inf")
    log = tmp_path / "metrics.jsonl"
    assert findings_path(tmp_path) == findings_path(log) == tmp_path / FINDINGS_FILE
    back = read_findings(log)
    assert back.graphs_per_epoch is None and back.config == Config()
    remove_findings(tmp_path)
    assert read_findings(tmp_path) is None  # no file: a gatrank train run, an older Monitor's
    remove_findings(tmp_path)  # nothing to remove is fine


def test_an_empty_findings_object_reads_back_empty(tmp_path):
    write_findings(tmp_path, graphs_per_epoch=200, config={}, findings={})
    assert read_findings(tmp_path) == RunFindings(200, Config(), {})


def test_what_cannot_be_written_is_named_before_anything_is(tmp_path):
    with pytest.raises(TypeError, match=r"findings\.numel\.w: a value of type object has no"):
        write_findings(tmp_path, graphs_per_epoch=1, config={},
                       findings={"numel": {"w": object()}})
    with pytest.raises(ValueError, match="graphs_per_epoch = 0: expected a positive integer"):
        write_findings(tmp_path, graphs_per_epoch=0, config={}, findings={})
    with pytest.raises(ValueError, match="config: override 'learning_rate'"):
        write_findings(tmp_path, graphs_per_epoch=1, config={"learning_rate": 0.1}, findings={})
    assert not (tmp_path / FINDINGS_FILE).exists()


def _doc(**changes):
    return {"format": FORMAT, "graphs_per_epoch": 8, "config": {}, "findings": {}, **changes}


@pytest.mark.parametrize(("doc", "named"), [
    ('{"format": 1, "graphs', r"not valid JSON \(Unterminated string"),
    ("[1, 2]", "a JSON list, not an object"),
    (_doc(format=2),
     r"format 2 was written by a newer gatrank \(this one reads format 1\): upgrade"),
    (_doc(format="1"), "format = '1': expected the integer 1"),
    ({"format": 1, "config": {}}, "no 'graphs_per_epoch', 'findings'"),
    (_doc(graphs_per_epoch=True), "graphs_per_epoch = True: expected a positive integer"),
    (_doc(graphs_per_epoch=-3), "graphs_per_epoch = -3"),
    (_doc(config=[]), "config is a list, not an object of dotted keys"),
    (_doc(config={"training.learning_rat": 0.1}), "config: "),
    (_doc(findings=[]), "findings is a JSON list, not an object"),
    (_doc(findings={"nonfinite": {}}), "findings.nonfinite is a dict, not a list"),
    (_doc(findings={"nonfinite": [{"epoch": 1}]}),
     r"findings.nonfinite\[0\] = \{'epoch': 1\}: expected an object with epoch, step, loss"),
    (_doc(findings={"nonfinite": [{"epoch": 1, "step": 0.5, "loss": "nan"}]}),
     r"findings.nonfinite\[0\]: epoch and step must be integers"),
    (_doc(findings={"nonfinite": [{"epoch": 1, "step": 0, "loss": "nan"}]}),
     r"findings.nonfinite\[0\].loss = 'nan': expected a number \(NaN, Infinity\)"),
])
def test_a_malformed_file_is_named_with_what_is_wrong(tmp_path, doc, named):
    _write_raw(tmp_path, doc)
    with pytest.raises(ValueError, match=rf"{re.escape(str(tmp_path / FINDINGS_FILE))}: .*{named}"):
        read_findings(tmp_path)
