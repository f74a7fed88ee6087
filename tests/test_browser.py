"""Browser checks with Debian's Chromium driven by Playwright (no browser download):

- a ``gatrank suite`` HTML report opens with the network off, styled, and its plotly figures
  render, both as the report folder holds it (loading the folder's one plotly.min.js and
  notebook.css) and self contained (copied alone into an empty folder);
- a notebook runs inside a real JupyterLab server on localhost and shows its live figure.

CI installs ``chromium`` with apt (``.ci/run``); without it these tests are skipped.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.browser]

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]
PLOTLY_MIME = "application/vnd.plotly.v1+json"


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _offline_page(browser, allowed: tuple[str, ...]):
    """A page whose every request outside ``allowed`` prefixes is aborted and recorded."""
    ctx = browser.new_context(offline=allowed == ("file:",), viewport={"width": 1300,
                                                                        "height": 900})
    blocked: list[str] = []
    errors: list[str] = []
    failed: list[str] = []

    def route(r):
        url = r.request.url
        if url.startswith(allowed + ("data:", "blob:")):
            r.continue_()
        else:
            blocked.append(url)
            r.abort()

    ctx.route("**/*", route)
    page = ctx.new_page()
    page.on("pageerror", lambda e: errors.append(str(e)))
    # a file: that is not there (a sibling script a copied page lacks) fails, it is not blocked
    page.on("requestfailed", lambda r: failed.append(r.url))
    ctx.failed = failed
    return ctx, page, blocked, errors


def _styled(page) -> bool:
    """JupyterLab's stylesheet applies (its theme's variables are defined)."""
    return page.evaluate("() => getComputedStyle(document.documentElement)"
                         ".getPropertyValue('--jp-layout-color0').trim() !== ''")


def _figures_drawn(page, n_figures: int) -> None:
    """Every plotly figure of the page has been drawn, with its traces."""
    page.wait_for_function(
        f"document.querySelectorAll('div.gatrank-plot .main-svg').length >= {n_figures}",
        timeout=60_000)
    drawn = page.eval_on_selector_all("div.gatrank-plot", "els => els.map(e => "
                                      "e.classList.contains('js-plotly-plot') && "
                                      "e.querySelectorAll('.scatterlayer .trace').length)")
    assert len(drawn) == n_figures and all(n > 0 for n in drawn)  # every figure has its traces


def _n_figures(ipynb: Path) -> int:
    executed = nbformat.read(str(ipynb), as_version=4)
    return sum(PLOTLY_MIME in o.get("data", {})
               for c in executed.cells for o in c.get("outputs", []))


def test_suite_report_renders_its_plots_with_the_network_off(tmp_path, browser, tiny_manifest):
    from gatrank.suite import run_suite
    from gatrank.suite.export import NOTEBOOK_CSS, PLOTLY_JS

    params = {"n": 8, "epochs": 30}
    res = run_suite(tiny_manifest, tmp_path / "report", notebooks=["03_overfit"],
                    parameters=params)
    assert res.ok, res.summary
    n_figures = _n_figures(res.out_dir / "03_overfit.ipynb")
    assert n_figures >= 3
    # the live curves' FigureWidget (closed once training ended) left no state behind: its
    # JavaScript bundle is as big as plotly.js
    assert '"_esm"' not in (res.out_dir / "03_overfit.ipynb").read_text()
    html = (res.out_dir / "03_overfit.html").read_text()
    assert re.findall(r"<script[^>]*\ssrc=\"([^\"]*)\"", html) == [PLOTLY_JS]
    assert "* plotly.js v" not in html and len(html) < 200_000  # no inline copies
    ctx, page, blocked, errors = _offline_page(browser, ("file:",))
    page.goto((res.out_dir / "index.html").as_uri())
    assert "pairwise accuracy > 0.9" in page.inner_text("body")
    page.click("text=03_overfit >> nth=0")
    page.wait_for_load_state("load")
    assert page.url.endswith("03_overfit.html")
    _figures_drawn(page, n_figures)
    assert _styled(page)
    assert blocked == [] and errors == [] and ctx.failed == []
    ctx.close()

    # the shared-script page copied alone cannot draw: the check below would see missing files
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(res.out_dir / "03_overfit.html", alone / "shared.html")
    ctx, page, blocked, errors = _offline_page(browser, ("file:",))
    page.goto((alone / "shared.html").as_uri())
    assert "plotly.js is not loaded in this page" in page.inner_text("body")
    assert not _styled(page)
    assert sorted(ctx.failed) == sorted((alone / f).as_uri() for f in (PLOTLY_JS, NOTEBOOK_CSS))
    ctx.close()

    # self contained (gatrank suite --self-contained): the page alone draws every figure
    mail = run_suite(tiny_manifest, tmp_path / "mail", notebooks=["03_overfit"],
                     parameters=params, self_contained=True)
    assert mail.ok, mail.summary
    assert not (mail.out_dir / PLOTLY_JS).exists() and not (mail.out_dir / NOTEBOOK_CSS).exists()
    shutil.copy(mail.out_dir / "03_overfit.html", alone / "03_overfit.html")
    ctx, page, blocked, errors = _offline_page(browser, ("file:",))
    page.goto((alone / "03_overfit.html").as_uri())
    page.wait_for_load_state("load")
    _figures_drawn(page, _n_figures(mail.out_dir / "03_overfit.ipynb"))
    assert _styled(page)
    assert blocked == [] and errors == [] and ctx.failed == []
    ctx.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _jupyterlab(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A JupyterLab server on localhost serving ``tmp_path``: ``(base URL, token)``; every
    cell in the DOM (no windowing) and no news prompt."""
    settings = tmp_path / "settings" / "@jupyterlab"
    (settings / "notebook-extension").mkdir(parents=True)
    (settings / "notebook-extension" / "tracker.jupyterlab-settings").write_text(
        '{"windowingMode": "none"}')
    (settings / "apputils-extension").mkdir(parents=True)
    (settings / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        '{"fetchNews": "false"}')
    port, token = _free_port(), "gatrank-test"
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
         "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp_path}",
         "--LabApp.expose_app_in_browser=True", f"--LabApp.user_settings_dir={settings.parent}",
         f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}"],
        stdout=open(tmp_path / "lab.log", "w"), stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    pytest.fail("JupyterLab did not start:\n" + (tmp_path / "lab.log").read_text())
                time.sleep(0.5)
        yield base, token
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()


def _open_and_run_all(page, url: str) -> None:
    """Open a notebook in JupyterLab, wait for its kernel, start running every cell."""
    page.goto(url)
    # optional chaining: the shell has no current widget until the notebook has opened
    page.wait_for_function("window.jupyterapp?.shell?.currentWidget?.sessionContext"
                           "?.session?.kernel?.status === 'idle'", timeout=120_000)
    # not awaited: execute() resolves only when every cell has run
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")


def _output_says(*texts: str) -> str:
    """A page function: whether some cell output's text holds one of ``texts``."""
    said = " || ".join(f"e.textContent.includes({json.dumps(t)})" for t in texts)
    return (f"() => Array.from(document.querySelectorAll('.jp-OutputArea-output'))"
            f".some(e => {said})")


def test_notebook_runs_in_jupyterlab_and_shows_its_live_figure(tmp_path, browser,
                                                               tiny_manifest):
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    run_dir = tmp_path / "run"
    nb = parameterize_notebook(load_notebook_node(str(ROOT / "notebooks" / "03_overfit.ipynb")),
                               {"manifest": str(tiny_manifest), "n": 8, "epochs": 500,
                                "run_dir": str(run_dir)})
    nbformat.write(nb, str(tmp_path / "overfit.ipynb"))
    with _jupyterlab(tmp_path) as (base, token):
        ctx, page, blocked, errors = _offline_page(browser, (base,))
        _open_and_run_all(page, f"{base}/lab/tree/overfit.ipynb?token={token}")
        # the training cell's figure: sample its number of logged epochs while it runs
        probe = ("() => { const g = document.querySelector('.jp-OutputArea-output "
                 ".js-plotly-plot, .jp-OutputArea-output.js-plotly-plot'); "
                 "return g && g.data ? g.data[0].x.length : null; }")
        done = _output_says("overfit verdict:")
        seen, deadline = set(), time.time() + 400
        while not page.evaluate(done):
            assert time.time() < deadline, "the notebook did not finish in JupyterLab"
            n = page.evaluate(probe)
            if n:
                seen.add(n)
            time.sleep(0.1)
        seen.add(page.evaluate(probe))
        assert max(seen) == 51  # epochs 1, 10, ..., 500: seconds of training to watch
        assert len(seen) >= 2, f"the figure was drawn once, not updated while training: {seen}"
        texts = page.locator(".jp-OutputArea-output").all_inner_texts()
        assert any("overfit verdict: PASS" in t for t in texts), texts[-3:]
        assert not any("Traceback" in t for t in texts)
        res = json.loads((run_dir / "03_overfit.results.json").read_text())
        assert res["passed"] and res["python"] == sys.executable
        assert blocked == [], blocked
        ctx.close()


def test_the_api_example_notebook_shows_the_doctors_report_as_a_table_in_jupyterlab(
        tmp_path, browser):
    """docs/in_your_notebook.ipynb in JupyterLab: a cell ending in gatrank.diagnose(...) shows
    the rendered report (a table with the cause ids), not the dataclass's repr."""
    shutil.copy(ROOT / "docs" / "in_your_notebook.ipynb", tmp_path / "mine.ipynb")
    with _jupyterlab(tmp_path) as (base, token):
        ctx, page, blocked, errors = _offline_page(browser, (base,))
        _open_and_run_all(page, f"{base}/lab/tree/mine.ipynb?token={token}")
        # the last cell: the fixed model's overfit test passes
        page.wait_for_function(_output_says("verdict: PASS", "Traceback"), timeout=400_000)
        texts = page.locator(".jp-OutputArea-output").all_inner_texts()
        assert not any("Traceback" in t for t in texts), texts
        # the doctor's cause ids sit in table cells, and no output is a dataclass repr
        cause_cells = page.evaluate(
            "() => Array.from(document.querySelectorAll('.jp-OutputArea-output table td code'))"
            ".map(e => e.textContent)")
        assert "constant_output_layer" in cause_cells, cause_cells
        assert not any(r in t for t in texts for r in ("DoctorReport(", "OverfitResult(",
                                                        "CheckReport(", "Verdict("))
        # the overfit test's curves are a static figure (inline SVG, no plotly.js)
        assert page.locator(".jp-OutputArea-output svg path.series").count() >= 4
        page.screenshot(path=str(tmp_path / "in_your_notebook.png"), full_page=True)
        assert blocked == [], blocked
        ctx.close()
