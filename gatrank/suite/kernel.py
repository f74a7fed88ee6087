"""The kernel the suite runs notebooks in: this interpreter's ipykernel, over unix sockets where
they fit, with environment variables set for the kernels started meanwhile."""

from __future__ import annotations

import importlib.util
import os
import sys
import uuid
from collections.abc import Mapping
from contextlib import contextmanager

from jupyter_client.kernelspec import KernelSpec
from jupyter_client.manager import KernelManager
from jupyter_core.paths import jupyter_runtime_dir
from traitlets import default

__all__ = ["kernel_manager_class", "environ"]


def _transport() -> str:
    """``ipc`` (unix sockets in Jupyter's runtime folder) where they fit, else ``tcp``.

    With unix sockets nothing listens on a TCP port of this machine, and the kernel has no
    "running over TCP without encryption" warning to print; TCP where there are no unix sockets
    or their path (the longest a kernel names) would pass the ~100-byte limit.
    """
    sockets = os.path.join(jupyter_runtime_dir(), f"kernel-{'0' * 36}-ipc-99999")
    return "ipc" if os.name == "posix" and len(sockets) < 100 else "tcp"


def kernel_manager_class() -> type:
    """A jupyter KernelManager that always starts ``sys.executable -m ipykernel_launcher``.

    A kernelspec named ``python3`` may point at another interpreter (a user-level
    registration); the suite must run in the environment that runs it.
    """
    if importlib.util.find_spec("ipykernel") is None:
        raise RuntimeError(
            f"ipykernel is not installed for {sys.executable}; the suite runs notebooks in a "
            "kernel of this environment: pip install ipykernel"
        )

    transport = _transport()

    class CurrentPythonKernelManager(KernelManager):
        @default("transport")
        def _transport_default(self) -> str:
            return transport

        @default("ip")
        def _ip_default(self) -> str:
            if self.transport != "ipc":
                return super()._ip_default()
            # jupyter_client reads ip before it names the connection file and would fall back
            # to "kernel-ipc" in the working folder, shared by every kernel started there
            runtime = jupyter_runtime_dir()
            os.makedirs(runtime, exist_ok=True)
            return os.path.join(runtime, f"kernel-{uuid.uuid4()}-ipc")

        @property
        def kernel_spec(self) -> KernelSpec:
            if self._kernel_spec is None:
                self._kernel_spec = KernelSpec(
                    argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                    display_name=f"Python ({sys.executable})",
                    language="python",
                )
            return self._kernel_spec

    return CurrentPythonKernelManager


@contextmanager
def environ(values: Mapping[str, str]):
    """Set environment variables for the kernels started inside (they inherit os.environ)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

