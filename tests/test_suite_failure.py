"""A suite run in which one notebook fails on bad data.

The failing notebook keeps its executed copy and HTML with the error at the top, ``index.html``
marks it failed, the other notebook's report is still written, and ``gatrank suite`` exits
non-zero. Each notebook reads its own params file, so one gets a broken manifest (no ``y``
column: a problem ``on_error="skip"`` cannot drop) and the other good synthetic data.
"""

from __future__ import annotations

import json
import re

import nbformat
import pytest

from gatrank.cli import main
from gatrank.datasets import write_dataset


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
