"""gatrank.suite.kernel: kernels of the running interpreter, over unix sockets where they fit."""

from __future__ import annotations

import os
import sys

from gatrank.suite.kernel import kernel_manager_class


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
