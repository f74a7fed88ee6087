"""gatrank.data.check: the CheckReport (errors, warnings, summary) against brute force."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from tiny_graphs import save_pt, write_manifest

from gatrank.data import CheckReport, check_manifest, load_graphs


def test_singleton_group_is_a_warning_not_an_error(files, caplog):
    manifest = write_manifest(files, "id,y,path,group\na,1,a.pt,q1\nb,2,b.pt,q1\nc,3,a.pt,q2\n")
    report = check_manifest(manifest)
    assert [(p.code, p.line, p.id) for p in report.problems] == [("singleton_group", 4, "c")]
    assert report.ok and report.warnings and not report.errors
    with caplog.at_level(logging.WARNING, logger="gatrank.data"):
        gs = load_graphs(manifest)
    assert len(gs) == 3 and gs.dropped == []
    assert "single graph" in caplog.text


def test_check_report_summary_against_brute_force(tmp_path):
    ys = [1.0, 1.0, 2.0, 2.0000001, 3.0, 1.0]
    groups = ["a", "a", "a", "b", "b", "b"]
    gs_text = "id,y,path,group,split\n" + "".join(
        f"g{i},{y},a.pt,{g},{'train' if i < 4 else 'test'}\n"
        for i, (y, g) in enumerate(zip(ys, groups, strict=True)))
    save_pt(tmp_path / "a.pt")
    report = check_manifest(write_manifest(tmp_path, gs_text))
    assert isinstance(report, CheckReport) and report.ok
    s = report.summary
    pairs = [(i, j) for i in range(6) for j in range(i + 1, 6) if groups[i] == groups[j]]
    ties = sum(abs(ys[i] - ys[j]) <= 1e-6 for i, j in pairs)
    assert s["tie_fraction"] == pytest.approx(ties / len(pairs))
    assert s["num_rows"] == s["num_graphs"] == 6 and s["num_features"] == 3
    assert s["nodes"] == {"min": 4.0, "mean": 4.0, "max": 4.0}
    assert s["y"]["std"] == pytest.approx(float(np.std(ys)))
    assert s["num_groups"] == 2 and s["splits"] == {"train": 4, "val": 0, "test": 2}
    json.dumps(report.to_dict())
    assert "tie_fraction" in report.format_table()


def test_check_report_lists_problems_and_summarizes_valid_rows(files):
    report = check_manifest(write_manifest(files, "id,y,path\na,1,a.pt\nb,2,nope.pt\n"))
    assert not report.ok and report.summary["num_rows"] == 2
    assert report.summary["num_graphs"] == 1 and report.summary["tie_fraction"] is None
    d = report.to_dict()
    assert d["problems"][0]["code"] == "missing_file" and d["problems"][0]["severity"] == "error"
    assert "missing_file" in report.format_table()
