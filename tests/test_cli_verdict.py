"""`gatrank verdict RUN`: the runbook's verdict and the doctor's reading of a run that already
happened; exit 0 on pass, 1 on fail, 2 on a missing or malformed log (named by file and line)."""

from __future__ import annotations

import pytest

from gatrank.cli import main
from gatrank.io import append_jsonl


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
