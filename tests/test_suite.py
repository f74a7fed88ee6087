"""gatrank suite: offline HTML export, the index page, parameters, and a run where a notebook
fails (it keeps its executed notebook and HTML, the index marks it, the exit code is 1)."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import nbformat
import plotly.graph_objects as go
import plotly.io as pio
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from gatrank.notebook import session as notebook_api
from gatrank.suite import export_html, kernel_manager_class, render_index, run_suite

PLOTLY_BANNER = re.compile(r"\* plotly\.js v\d+\.\d+\.\d+")
EXTERNAL = re.compile(r"<(script|link|img|iframe)[^>]+(src|href)\s*=\s*[\"']?(https?:)?//", re.I)


def _figure_output(title: str) -> dict:
    notebook_api.setup()
    fig = go.Figure(go.Scatter(x=[1, 2, 3], y=[3, 1, 2]), layout={"title": title})
    bundle = pio.renderers[notebook_api.RENDERER].to_mimebundle(fig.to_dict())
    return new_output("display_data", data=bundle)


def _notebook_with_plots(path: Path, n_figures: int = 2) -> Path:
    nb = new_notebook()
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    widget = new_output("display_data", data={
        "application/vnd.jupyter.widget-view+json": {"model_id": "abc", "version_major": 2,
                                                     "version_minor": 0},
        "text/plain": "IntSlider(value=3)"})
    cells = [new_markdown_cell("# A report")]
    for i in range(n_figures):
        cell = new_code_cell(f"fig{i}")
        cell.outputs = [_figure_output(f"figure {i}")]
        cells.append(cell)
    slider = new_code_cell("slider")
    slider.outputs = [widget]
    nb.cells = cells + [slider]
    nbformat.write(nb, str(path))
    return path


def test_export_embeds_plotly_once_and_loads_nothing_from_the_network(tmp_path):
    src = _notebook_with_plots(tmp_path / "nb.ipynb", n_figures=3)
    html = export_html(src, tmp_path / "nb.html").read_text()
    assert len(PLOTLY_BANNER.findall(html)) == 1
    assert html.count("Plotly.newPlot(") == 3
    assert not EXTERNAL.search(html), EXTERNAL.search(html)
    for cdn in ("require.js", "html-manager", "MathJax.js", "mermaid.esm"):
        assert cdn not in html
    # the widget became a note, and its state (rendered by a CDN script) is gone
    assert "open the notebook in JupyterLab" in html
    assert "widget-state+json" not in html
    assert 'id="gatrank-error"' not in html


def test_export_of_a_failed_notebook_puts_the_error_on_top(tmp_path):
    src = _notebook_with_plots(tmp_path / "nb.ipynb", n_figures=1)
    html = export_html(src, tmp_path / "nb.html", error="ValueError: <planted> & co").read_text()
    banner = html.index('id="gatrank-error"')
    assert banner < html.index('class="jp-Cell')
    assert "ValueError: &lt;planted&gt; &amp; co" in html[banner:banner + 500]


def test_figure_html_without_plotly_says_so_instead_of_failing():
    html = _figure_output("t")["data"]["text/html"]
    assert "if(!window.Plotly)" in html and "plotly.js is not loaded" in html
    assert "<script src" not in html


def _summary(notebooks: list[dict]) -> dict:
    return {"gatrank": "0", "created": "2024-01-01T00:00:00+00:00", "manifest": "m.csv",
            "status": "FAIL", "duration_s": 12.5, "notebooks": notebooks}


def test_index_lists_every_check_with_its_value_and_marks_failures():
    ok = {"name": "03_overfit", "step": "Step 1: overfit test", "status": "FAIL (red flags)",
          "duration_s": 3.0, "html": "03_overfit.html", "ipynb": "03_overfit.ipynb", "error": "",
          "results": {"checks": [
              {"name": "spearman", "kind": "pass", "rule": "Spearman > 0.8", "value": 0.123456,
               "ok": False},
              {"name": "score_collapsed", "kind": "red_flag", "rule": "score std < 0.01",
               "value": 0.001, "ok": False},
              {"name": "ties", "kind": "warning", "rule": "few ties", "value": 0.5, "ok": True},
          ]}}
    broken = {"name": "01_data_checks", "step": "Step 2B", "status": "ERROR", "duration_s": 1.0,
              "html": "01_data_checks.html", "ipynb": "01_data_checks.ipynb",
              "error": "DataError: 3 <problems>", "results": None}
    page = render_index(_summary([broken, ok]))
    assert page.count('href="03_overfit.html"') >= 2 and 'href="01_data_checks.ipynb"' in page
    assert "Spearman &gt; 0.8" in page and "0.1235" in page
    rows = {r.split("</td>")[0]: r for r in page.split("<tr><td>")[1:]}
    assert 'class="badge FAIL">FAIL<' in rows["Spearman &gt; 0.8"]
    assert "RED FLAG" in rows["score std &lt; 0.01"]
    assert "WARNING" not in rows["few ties"] and ">ok<" in rows["few ties"]
    assert "DataError: 3 &lt;problems&gt;" in page
    assert "failed before recording its checks" in page
    assert "<script" not in page and not EXTERNAL.search(page) and "http" not in page


def test_kernel_manager_starts_the_running_interpreter():
    km = kernel_manager_class()(kernel_name="python3")
    assert km.kernel_spec.argv[:3] == [sys.executable, "-m", "ipykernel_launcher"]


def test_unknown_notebook_is_named(tmp_path):
    with pytest.raises(ValueError, match="99_nope"):
        run_suite(out_dir=tmp_path / "out", notebooks=["99_nope"],
                  notebooks_dir=Path(__file__).resolve().parents[1] / "notebooks")


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
    from gatrank.cli import main

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
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("[")]
    assert len(lines) == 2 and "ERROR" in lines[0] and "PASS" in lines[1]
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


def test_kernels_talk_over_unix_sockets_unless_their_path_is_too_long(tmp_path, monkeypatch):
    import tempfile

    short = tempfile.mkdtemp(prefix="rt")  # pytest's tmp_path may itself be too long
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", short)
    assert kernel_manager_class()().transport == ("ipc" if sys.platform != "win32" else "tcp")
    os.rmdir(short)
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / ("x" * 80)))
    assert kernel_manager_class()().transport == "tcp"
