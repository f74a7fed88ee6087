"""gatrank.suite.kernel: kernels of the running interpreter, over unix sockets where they fit,
one started ahead with the notebooks' imports done."""

from __future__ import annotations

import ast
import itertools
import os
import sys
import threading
import time
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from gatrank.suite.kernel import KernelSupply, adopting, import_lines, kernel_manager_class


def test_kernel_manager_starts_the_running_interpreter():
    km = kernel_manager_class()(kernel_name="python3")
    assert km.kernel_spec.argv[:3] == [sys.executable, "-m", "ipykernel_launcher"]


def test_kernels_talk_over_unix_sockets_unless_their_path_is_too_long(tmp_path, monkeypatch):
    import tempfile

    short = tempfile.mkdtemp(prefix="rt")  # pytest's tmp_path may itself be too long
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", short)
    assert kernel_manager_class()().transport == ("ipc" if sys.platform != "win32" else "tcp")
    os.rmdir(short)
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / ("x" * 80)))
    assert kernel_manager_class()().transport == "tcp"


def _ask(km, code: str) -> dict:
    """Run ``code`` in the kernel; its last expression's value and the execution count."""
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        reply = kc.execute_interactive(code, user_expressions={"v": "answer"}, timeout=60)
    finally:
        kc.stop_channels()
    content = reply["content"]
    assert content["status"] == "ok", content
    return {"value": ast.literal_eval(content["user_expressions"]["v"]["data"]["text/plain"]),
            "count": content["execution_count"]}


@pytest.mark.slow
def test_a_kernel_started_ahead_has_the_imports_env_and_folder_and_a_clean_counter(tmp_path):
    supply = KernelSupply(tmp_path, {"GATRANK_TEST_MARK": "7"},
                          "\n".join(import_lines([_notebook(tmp_path)])))
    supply.start_ahead()
    supply.start_ahead()  # one ahead at most
    km = supply.take()
    try:
        got = _ask(km, "import os, sys\nanswer = (os.getcwd(), os.environ['GATRANK_TEST_MARK'], "
                       "'fractions' in sys.modules, 'wave' in sys.modules)")
        assert got["value"] == (str(tmp_path), "7", True, False)
        assert got["count"] == 1  # the warm-up imports left no trace in the history
        assert supply.started == 1 and supply.taken_ahead == 1
    finally:
        km.shutdown_kernel(now=True)
    other = supply.take()  # none ahead now: started on the spot
    assert supply.started == 2 and supply.taken_ahead == 1
    other.shutdown_kernel(now=True)
    supply.start_ahead(2)
    ahead = list(supply._ahead)
    supply.close()  # the unused ones are shut down, not leaked
    assert supply.started == 4 and len(ahead) == 2
    assert not any(f.result().is_alive() for f in ahead)


class _FakeKernel:
    def __init__(self, n: int) -> None:
        self.n = n

    def shutdown_kernel(self, now: bool = False) -> None:
        self.n = -self.n


def test_given_needed_take_keeps_one_kernel_ahead_until_all_were_asked_for(monkeypatch, tmp_path):
    supply = KernelSupply(tmp_path, needed=5)
    counter = iter(range(1, 100))
    monkeypatch.setattr(supply, "_start", lambda *_: _FakeKernel(next(counter)))
    supply.start_ahead(2)
    kernels, ahead_after = [], []
    for _ in range(5):
        kernels.append(supply.take())
        ahead_after.append(len(supply._ahead))
    # 2 started at the outset; the second take leaves none ahead, so one more starts, and so
    # on until the fifth was asked for; the fifth take starts none
    assert ahead_after == [1, 1, 1, 1, 0]
    assert [k.n for k in kernels] == [1, 2, 3, 4, 5] and supply.taken_ahead == 5
    assert supply._asked == 5


def test_kernels_started_while_notebooks_run_also_run_the_refill_code(monkeypatch, tmp_path):
    supply = KernelSupply(tmp_path, needed=3, refill_code="import plotly.io._renderers")
    extras: list[str] = []

    def start(extra: str = "") -> _FakeKernel:
        extras.append(extra)
        return _FakeKernel(len(extras))

    monkeypatch.setattr(supply, "_start", start)
    supply.start_ahead(2)  # the first ones, which the first notebooks wait for
    for _ in range(3):
        supply.take()
    assert extras == ["", "", "import plotly.io._renderers"]


def test_without_needed_take_starts_nothing_ahead(monkeypatch, tmp_path):
    supply = KernelSupply(tmp_path)
    counter = iter(range(1, 100))
    monkeypatch.setattr(supply, "_start", lambda *_: _FakeKernel(next(counter)))
    supply.start_ahead(1)
    assert supply.take().n == 1 and supply.take().n == 2  # the second started on the spot
    assert not supply._ahead and supply.taken_ahead == 1


def test_the_first_ready_kernel_goes_to_the_lowest_rank_whoever_asked_first(monkeypatch,
                                                                           tmp_path):
    supply = KernelSupply(tmp_path)
    gates = {1: threading.Event(), 2: threading.Event()}
    counter = itertools.count(1)
    lock = threading.Lock()

    def start(*_) -> _FakeKernel:
        with lock:
            n = next(counter)
        if n in gates:
            assert gates[n].wait(10)
        return _FakeKernel(n)

    monkeypatch.setattr(supply, "_start", start)
    supply.start_ahead(2)
    got: dict[str, _FakeKernel] = {}

    def taker(rank: int) -> threading.Thread:
        t = threading.Thread(target=lambda: got.__setitem__(f"rank {rank}", supply.take(rank)))
        waiting = len(supply._waiting)
        t.start()
        deadline = time.monotonic() + 10
        while len(supply._waiting) == waiting and time.monotonic() < deadline:
            time.sleep(0.01)
        return t

    later, first = taker(1), taker(0)  # rank 1 asks first; neither kernel is ready yet
    assert not got
    gates[2].set()  # one kernel gets ready: the lower rank has it, not the first to ask
    first.join(10)
    assert got == {"rank 0": got["rank 0"]} and got["rank 0"].n == 2
    gates[1].set()
    later.join(10)
    assert got["rank 1"].n == 1 and supply.taken_ahead == 2 and not supply._waiting


def test_import_lines_are_the_notebooks_one_line_imports_once(tmp_path):
    assert import_lines([_notebook(tmp_path), _notebook(tmp_path)]) == [
        "import fractions", "from json import dumps"]
    (tmp_path / "flat.ipynb").write_text(  # a source stored as one string, as JSON allows
        '{"cells": [{"cell_type": "code", "source": "import wave\\nx = 1"}], "nbformat": 4}')
    assert import_lines([tmp_path / "flat.ipynb"]) == ["import wave"]
    (tmp_path / "broken.ipynb").write_text('{"cells": [')
    with pytest.raises(ValueError, match="broken.ipynb: not a readable notebook"):
        import_lines([tmp_path / "broken.ipynb"])


def test_adopting_hands_the_started_kernel_to_whoever_constructs_the_class():
    km = kernel_manager_class()()
    cls = adopting(km)
    assert cls(kernel_name="python3", config=None) is km and issubclass(cls, type(km))


def _notebook(folder: Path) -> Path:
    nb = new_notebook(cells=[
        new_markdown_cell("import wave  (markdown: not code)"),
        new_code_cell("import fractions\nfrom json import dumps\nfrom os import (\n    sep)\n"
                      "x = 1  # import nothing"),
        new_code_cell("    import wave  # indented: inside a block"),
    ])
    path = folder / "nb.ipynb"
    nbformat.write(nb, str(path))
    return path
