"""gatrank.suite.run: notebook names checked up front, and suite runs in which a notebook fails:
it keeps its executed notebook and HTML with the error at the top, ``index.html`` marks it
failed, the other notebook's report is still written, and ``gatrank suite`` exits non-zero.

In the run on bad data each notebook reads its own params file, so one gets a broken manifest (no
``y`` column: a problem ``on_error="skip"`` cannot drop) and the other good synthetic data.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from gatrank.cli import main
from gatrank.datasets import write_dataset
from gatrank.suite.run import _overrides, run_suite

ROOT = Path(__file__).resolve().parents[2]


def test_unknown_notebook_is_named(tmp_path):
    with pytest.raises(ValueError, match="99_nope"):
        run_suite(out_dir=tmp_path / "out", notebooks=["99_nope"],
                  notebooks_dir=ROOT / "notebooks")


def _write_nb(path: Path, params: str, body: str) -> None:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    p = new_code_cell(params)
    p.metadata["tags"] = ["parameters"]
    nb.cells = [new_markdown_cell(f"# {path.stem}"), p, new_code_cell(body)]
    nbformat.write(nb, str(path))


@pytest.mark.slow
def test_a_failing_notebook_is_reported_and_the_suite_goes_on(tmp_path, capsys):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _write_nb(nbs / "01_broken.ipynb", 'run_dir: str = ""  # where results go',
              'raise ValueError("planted failure")')
    _write_nb(nbs / "02_ok.ipynb", 'run_dir: str = ""  # where results go\nvalue: int = 1  # x',
              "import json, pathlib\n"
              "checks = [{'name': 'v', 'kind': 'pass', 'rule': 'value is 7', 'value': value,"
              " 'ok': value == 7}]\n"
              "pathlib.Path(run_dir, '02_ok.results.json').write_text(json.dumps("
              "{'label': 'PASS', 'passed': True, 'checks': checks}))")
    (nbs / "02_ok.yaml").write_text("value: 7\n")
    out = tmp_path / "report"
    code = main(["suite", "--notebooks-dir", str(nbs), "--params-dir", str(nbs),
                 "--notebooks", "01_broken,02_ok", "--out", str(out), "-q"])
    assert code == 1
    lines = {ln.split()[1]: ln for ln in capsys.readouterr().out.splitlines()
             if ln.startswith("[")}  # one line per finished notebook, in the order they finish
    assert len(lines) == 2
    assert "ERROR" in lines["01_broken"] and "PASS" in lines["02_ok"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "FAIL"
    assert [n["status"] for n in summary["notebooks"]] == ["ERROR", "PASS"]
    assert "planted failure" in summary["notebooks"][0]["error"]
    assert summary["notebooks"][1]["results"]["checks"][0]["value"] == 7  # params file injected
    executed = nbformat.read(str(out / "01_broken.ipynb"), as_version=4)
    assert "papermill-error-cell" in executed.cells[0].source  # papermill's error cell on top
    html = (out / "01_broken.html").read_text()
    banner = html.index('id="gatrank-error"')
    assert banner < html.index('class="jp-Cell')
    assert "ValueError: planted failure" in html[banner:banner + 500]
    index = (out / "index.html").read_text()
    assert 'class="badge ERROR">ERROR<' in index and 'href="01_broken.html"' in index
    assert "value is 7" in index


@pytest.mark.slow
def test_notebook_failing_on_bad_data_is_reported_and_the_rest_kept(tmp_path, capsys):
    good = write_dataset("synthetic", tmp_path / "good", n=16, seed=0)
    bad = tmp_path / "bad" / "manifest.csv"
    bad.parent.mkdir()
    bad.write_text("id,target,smiles\na,1,CCO\nb,2,CCCO\n")
    params = tmp_path / "params"
    params.mkdir()
    (params / "01_data_checks.yaml").write_text(f"manifest: {str(bad)!r}\n")
    (params / "02_loss_tests.yaml").write_text(f"manifest: {str(good)!r}\nmax_batches: 2\n")
    out = tmp_path / "report"

    code = main(["suite", "--notebooks", "01_data_checks,02_loss_tests", "--params-dir",
                 str(params), "--out", str(out), "--threads", "1", "--timeout", "120"])
    printed = capsys.readouterr()
    assert code != 0, printed.out
    assert "Traceback" not in printed.err

    summary = json.loads((out / "summary.json").read_text())
    status = {nb["name"]: nb for nb in summary["notebooks"]}
    assert summary["status"] == "FAIL"
    failed, kept = status["01_data_checks"], status["02_loss_tests"]
    assert failed["status"] == "ERROR"
    assert "DataError" in failed["error"] and "missing_y_column" in failed["error"]
    assert kept["status"].startswith("PASS") and not kept["error"]

    # the failing notebook: executed copy with the error first, HTML with a banner on top
    nb = nbformat.read(out / "01_data_checks.ipynb", as_version=4)
    assert "papermill-error-cell" in json.dumps(nb.cells[0])  # papermill's pointer, at the top
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert errors and errors[0]["ename"] == "DataError"
    page = (out / "01_data_checks.html").read_text()
    banner = page.find('id="gatrank-error"')
    assert 0 <= banner < page.find('<div class="jp-Cell'), "the error banner must come first"
    assert "missing_y_column" in page[banner:banner + 2000]

    # the index marks it failed and links both reports
    index = (out / "index.html").read_text()
    row = re.search(r"<tr>.*?01_data_checks.*?</tr>", index, re.S)
    assert row and "ERROR" in row.group(0)
    assert 'href="01_data_checks.html"' in index and 'href="02_loss_tests.html"' in index

    # the other notebook's reports are all there
    for name in ("02_loss_tests.ipynb", "02_loss_tests.html", "02_loss_tests.results.json"):
        assert (out / name).stat().st_size > 0, name


def test_a_dataset_replaces_the_params_files_manifest(tmp_path, monkeypatch):
    """Every notebook gets the dataset (a file made absolute) and an empty manifest, so a
    params file's manifest cannot make both set; both at once are refused."""
    monkeypatch.chdir(tmp_path)
    over = _overrides(None, "graphs.pt", {"seed": 1}, tmp_path / "out")
    assert over["dataset"] == str(tmp_path / "graphs.pt") and over["manifest"] == ""
    assert _overrides(None, "mod:ds", None, tmp_path)["dataset"] == "mod:ds"
    over = _overrides("m.csv", None, None, tmp_path)
    assert over["manifest"] == str(tmp_path / "m.csv") and over["dataset"] == ""
    with pytest.raises(ValueError, match="not both"):
        _overrides("m.csv", "mod:ds", None, tmp_path)


_TIMED = ("import json, os, pathlib, time\n"
          "start = time.time()\n"
          "time.sleep(seconds)\n"
          "rec = {'start': start, 'end': time.time(), 'cwd': os.getcwd(),\n"
          "       'threads': os.environ.get('OMP_NUM_THREADS'), 'label': 'PASS', 'checks': []}\n"
          "pathlib.Path(run_dir, name + '.results.json').write_text(json.dumps(rec))")


@pytest.mark.slow
def test_independent_notebooks_overlap_and_a_needed_one_finishes_first(tmp_path, monkeypatch):
    """Three notebooks, two at once: the two independent ones overlap; the one needing the slow
    one starts after it ended; kernels run in the notebook folder with the cores shared out;
    the summary keeps the given order; this process's working folder is left alone."""
    from gatrank.suite import run as suite_run
    from gatrank.suite.schedule import cpu_count

    nbs = tmp_path / "nbs"
    nbs.mkdir()
    for name, seconds in (("a_slow", 4), ("b_fast", 0), ("c_after", 0)):
        _write_nb(nbs / f"{name}.ipynb", f'run_dir: str = ""  # out\nname = "{name}"  # me\n'
                  f"seconds: float = {seconds}  # how long", _TIMED)
    monkeypatch.setattr(suite_run, "NEEDS", {"c_after": ("a_slow",)})
    here = Path.cwd()
    lines: list[str] = []
    res = run_suite(out_dir=tmp_path / "out", notebooks=["a_slow", "b_fast", "c_after"],
                    notebooks_dir=nbs, params_dir=nbs, jobs=2, progress=lines.append)
    assert Path.cwd() == here
    assert [nb.name for nb in res.notebooks] == ["a_slow", "b_fast", "c_after"] and res.ok
    rec = {nb.name: nb.results for nb in res.notebooks}
    assert rec["b_fast"]["start"] < rec["a_slow"]["end"], "independent notebooks ran in turn"
    assert rec["c_after"]["start"] >= rec["a_slow"]["end"]
    assert {r["cwd"] for r in rec.values()} == {str(nbs)}
    assert {r["threads"] for r in rec.values()} == {str(max(1, cpu_count() // 2))}
    assert res.summary["jobs"] == 2
    assert any(ln.startswith("  start b_fast") and "a_slow" in ln for ln in lines), lines
    assert [ln.split()[1] for ln in lines if ln.startswith("[")] == ["b_fast", "a_slow",
                                                                     "c_after"]


def test_the_suite_process_never_imports_torch():
    """The process that starts and watches the kernels needs no torch (4 s to import on 2
    cores, on the suite's critical path before the first kernel starts); the kernels import
    it themselves."""
    code = ("import sys; from gatrank.cli import parser; import gatrank.suite.run; "
            "from gatrank.suite.run import _overrides; "
            "_overrides(None, None, {'seed': 1}, __import__('pathlib').Path('out')); "
            "print('torch' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert res.stdout.split() == ["False"], res.stderr
