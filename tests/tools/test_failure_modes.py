"""The bad-input corpus, end to end through the command line.

Every live case of :mod:`tools.failure_modes` is built in a fresh folder and run through
``gatrank.cli.main``: it must exit with its documented code, print no traceback, name what is
wrong (for a bad row: its line, id and file on one output line), and still print what
``docs/failure_modes.md`` says it prints. A few cases also run as a real ``python -m gatrank``
process, to see what reaches the terminal.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gatrank.cli import main
from gatrank.data import DataError
from tools.failure_modes import (
    CASES,
    MARKER,
    FailureMode,
    run_case,
    section_output,
    shown_output,
)

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "failure_modes.md"
LIVE = [c for c in CASES if c.build is not None]
REGENERATE = "regenerate it: python -m tools.failure_modes docs/failure_modes.md"

# The issue's list of bad inputs, each mapped to the corpus case that covers it.
REQUIRED = {
    "empty file": "empty_file",
    "header only": "header_only",
    "missing y column": "missing_y_column",
    "missing graph-source column": "missing_source_column",
    "both path and smiles": "both_sources",
    "neither path nor smiles": "no_source",
    "missing file": "missing_file",
    "unreadable or truncated file": "truncated_file",
    "unknown extension": "unknown_extension",
    "NaN y": "nan_y",
    "Inf y": "inf_y",
    "non-numeric y": "non_numeric_y",
    "empty y": "empty_y",
    "duplicate ids": "duplicate_id",
    "invalid SMILES": "invalid_smiles",
    "zero-node graph": "zero_nodes",
    "zero-edge graph": "zero_edges",
    "edge index out of range": "edge_index_out_of_range",
    "non-integer edge index": "non_integer_edge_index",
    "node feature widths differ": "feature_width_mismatch",
    "NaN in node features": "nan_features",
    "UTF-8 BOM": "bom",
    "CRLF line endings": "crlf",
    "semicolon-separated": "semicolon",
    "unknown split values": "unknown_split",
    "group with one member": "singleton_group",
    "paths leaving the folder": "path_outside_root",
    "... allowed with the flag": "path_outside_root_allowed",
    "--on-error skip": "on_error_skip",
}


pytestmark = pytest.mark.usefixtures("one_thread")


def _row_named(output: str, row: tuple[int, str, str]) -> bool:
    """True when one output line starts with the line number, then the id, then the file."""
    line, rid, file = row
    pattern = rf"^\s*{line}\s+{re.escape(rid)}\s+{re.escape(file)}\s"
    return any(re.match(pattern, ln) for ln in output.splitlines())


def test_corpus_covers_the_issue_list():
    ids = {c.id for c in CASES}
    missing = {what: cid for what, cid in REQUIRED.items() if cid not in ids}
    assert not missing
    data_cases = [c for c in LIVE if c.area in ("manifest", "row", "graph file", "security")]
    assert len(data_cases) >= 25
    assert len({c.id for c in CASES}) == len(CASES), "case ids must be unique"


@pytest.mark.parametrize("case", LIVE, ids=[c.id for c in LIVE])
def test_case_gives_a_clear_message_and_no_traceback(case: FailureMode, tmp_path):
    run = run_case(case, tmp_path)
    assert run.exit_code == case.exit_code, run.output
    assert "Traceback" not in run.output
    for fragment in case.expect:
        assert fragment in run.output, f"{fragment!r} missing from:\n{run.output}"
    if case.row is not None:
        assert _row_named(run.output, case.row), f"no line naming {case.row}:\n{run.output}"
    if case.exit_code in (1, 2) and case.build is not None:
        assert run.stderr.strip() or run.stdout.strip(), "a failure must say something"
    assert not (tmp_path / MARKER).exists(), "a malicious payload ran"
    page = PAGE.read_text(encoding="utf-8") if PAGE.exists() else ""
    assert section_output(page, case.id) == shown_output(case, run), (
        f"docs/failure_modes.md no longer shows what the CLI prints for {case.id}; {REGENERATE}"
    )


def test_page_lists_every_case_and_only_existing_tests():
    page = PAGE.read_text(encoding="utf-8")
    for case in CASES:
        assert f'<a id="{case.id}"></a>' in page, f"{case.id} missing; {REGENERATE}"
        for ref in case.tested_by:
            file, _, name = ref.partition("::")
            assert (ROOT / file).is_file(), ref
            assert re.search(rf"^def {name}\(", (ROOT / file).read_text(), re.M), ref
        if case.build is None:
            assert case.tested_by and case.sees, f"{case.id}: a case without a command needs both"
    anchors = re.findall(r'<a id="([^"]+)"></a>', page)
    assert sorted(anchors) == sorted(c.id for c in CASES), REGENERATE


def test_skip_reports_the_dropped_rows_in_the_summary(tmp_path):
    case = next(c for c in CASES if c.id == "on_error_skip")
    run = run_case(case, tmp_path)
    assert run.exit_code == 0, run.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    dropped = summary["dropped_rows"]
    assert summary["num_dropped_rows"] == 3
    assert sorted((p["line"], p["id"], p["code"]) for p in dropped) == [
        (6, "n1", "nan_target"), (7, "n2", "missing_file"), (8, "n3", "unknown_extension")]
    assert summary["num_graphs"] == 4  # 7 rows - 3 dropped, nothing else lost
    printed = [ln for ln in run.stdout.splitlines() if ln.startswith("  line ")]
    assert len(printed) == len(dropped)
    for p in dropped:
        assert any(f"line {p['line']}  id {p['id']}" in ln and p["code"] in ln for ln in printed)


def test_skip_with_nothing_valid_left_still_fails(tmp_path):
    (tmp_path / "m.csv").write_text("id,y,path\na,nan,a.pt\nb,1,b.pt\n")
    code = main(["train", "--manifest", str(tmp_path / "m.csv"), "--on-error", "skip",
                 "--no-progress", "--no-baseline"])
    assert code == 1
    code = main(["check-data", "--manifest", str(tmp_path / "m.csv"), "--on-error", "skip"])
    assert code == 1


def test_debug_shows_the_traceback_in_process(tmp_path):
    (tmp_path / "m.csv").write_text("id,y,path\na,nan,a.pt\n")
    with pytest.raises(DataError):
        main(["train", "--manifest", str(tmp_path / "m.csv"), "--debug", "--no-progress"])


def _gatrank(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "gatrank", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_terminal_sees_messages_not_tracebacks(tmp_path):
    (tmp_path / "m.csv").write_text("id,y,path\na,nan,a.pt\nb,1,b.txt\n")
    (tmp_path / "bad.yaml").write_text("training:\n  learning_rate: -1\n")

    data = _gatrank("train", "--manifest", "m.csv", "--no-progress", cwd=tmp_path)
    assert data.returncode == 1
    assert "Traceback" not in data.stderr
    assert _row_named(data.stderr, (2, "a", "m.csv")) and "nan_target" in data.stderr
    assert _row_named(data.stderr, (3, "b", "m.csv")) and "unknown_extension" in data.stderr

    config = _gatrank("train", "--manifest", "m.csv", "--config", "bad.yaml", cwd=tmp_path)
    assert config.returncode == 2
    assert "Traceback" not in config.stderr
    assert "training.learning_rate" in config.stderr and "-1" in config.stderr

    debug = _gatrank("train", "--manifest", "m.csv", "--debug", "--no-progress", cwd=tmp_path)
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr and "DataError" in debug.stderr
