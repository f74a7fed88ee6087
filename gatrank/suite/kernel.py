"""The kernels the suite runs notebooks in: this interpreter's ipykernel, over unix sockets where
they fit, started with the suite's environment and working folder, one started ahead of need.

:class:`KernelSupply` hands out started kernels. While notebooks run, it starts the next one
in the background and runs the notebooks' own import lines in it, silently (no output, no
history, the execution counter untouched), so the next notebook finds torch and PyG already
imported instead of paying ~5 s of kernel start and imports after a slot frees up."""

from __future__ import annotations

import heapq
import importlib.util
import itertools
import json
import logging
import os
import sys
import threading
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path

from jupyter_client.kernelspec import KernelSpec
from jupyter_client.manager import KernelManager
from jupyter_core.paths import jupyter_runtime_dir
from traitlets import default

__all__ = ["kernel_manager_class", "environ", "start_kernel", "KernelSupply", "import_lines",
           "adopting"]

logger = logging.getLogger(__name__)

STARTUP_TIMEOUT_S = 60
"""Seconds a kernel may take to start and answer (papermill's default start_timeout)."""


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



def adopting(km: KernelManager) -> type[KernelManager]:
    """A kernel manager class whose construction returns the started ``km``: given to papermill
    (``kernel_manager_class=``), nbclient runs the notebook in that kernel as in one it
    started itself, and shuts it down and closes its channels when done."""

    class Adopted(type(km)):  # type: ignore[misc, valid-type]
        def __new__(cls, *args: object, **kwargs: object) -> KernelManager:
            return km  # not an Adopted instance, so __init__ is not run again on it

    return Adopted


def import_lines(notebooks: Sequence[str | Path]) -> list[str]:
    """The top-level ``import``/``from`` lines of the notebooks' code cells, each once, in the
    order they first appear: what a kernel started ahead of need imports while it waits.

    The notebooks are read as the JSON they are, not with nbformat: importing nbformat takes
    seconds where jupyterlab is installed (its jsonschema builds ~40 IRI grammars on import),
    and the suite reads these lines before it starts the first kernels.
    """
    seen: dict[str, None] = {}
    for path in notebooks:
        try:
            cells = json.loads(Path(path).read_text(encoding="utf-8")).get("cells", [])
        except (OSError, ValueError, AttributeError) as exc:
            raise ValueError(f"{path}: not a readable notebook ({exc})") from exc
        for cell in cells:
            if cell.get("cell_type") != "code":
                continue
            source = cell.get("source", "")
            source = "".join(source) if isinstance(source, list) else str(source)
            for line in map(str.rstrip, source.splitlines()):
                # one-line imports only: a continued one would be cut off mid-statement
                if line.startswith(("import ", "from ")) and not line.endswith(("(", "\\")):
                    seen.setdefault(line, None)
    return list(seen)


def start_kernel(cwd: str | Path, env: Mapping[str, str] | None = None,
                 warm_code: str = "") -> KernelManager:
    """A started kernel of this interpreter in ``cwd`` with ``os.environ`` plus ``env``, ready
    to execute; ``warm_code`` runs in it first, silently (no output or history, the execution
    counter untouched; an error in it is logged and left for the notebook to meet itself).

    Raises:
        RuntimeError: the kernel did not start or answer within :data:`STARTUP_TIMEOUT_S`.
    """
    km = kernel_manager_class()()
    km.start_kernel(cwd=str(cwd), env={**os.environ, **(env or {})})
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=STARTUP_TIMEOUT_S)
        if warm_code:
            reply = kc.execute_interactive(warm_code, silent=True, store_history=False,
                                           timeout=STARTUP_TIMEOUT_S)
            if reply["content"].get("status") != "ok":
                logger.info("warm-up imports failed in a prestarted kernel (%s: %s); the "
                            "notebook will meet the error itself",
                            reply["content"].get("ename"), reply["content"].get("evalue"))
    except Exception:
        km.shutdown_kernel(now=True)
        raise
    finally:
        kc.stop_channels()
    return km


class KernelSupply:
    """Started kernels for the suite's notebooks, some started ahead of need.

    :meth:`take` returns a ready kernel (the first of those started ahead to be ready, waiting
    for one if need be, else a new one); :meth:`start_ahead` starts kernels in background
    threads. Kernels are the caller's to shut down once taken; :meth:`close` shuts down those
    never taken. Thread-safe: the suite's worker threads take kernels concurrently, and when
    several wait, the first ready kernel goes to the taker with the lowest ``rank`` (the
    notebook the others wait on), whichever thread asked first.

    Given ``needed`` (how many kernels the caller will take in all), :meth:`take` keeps one
    kernel started ahead while fewer than ``needed`` were asked for: the next notebook's kernel
    starts while this one runs, and not more of them (a start competes with the running
    notebooks for the cores). Such a kernel also runs ``refill_code`` after ``warm_code``:
    imports the notebooks would pay later, worth doing in a kernel that starts while others
    run, not in the first ones, which the first notebooks wait for.
    """

    def __init__(self, cwd: str | Path, env: Mapping[str, str] | None = None,
                 warm_code: str = "", needed: int | None = None,
                 refill_code: str = "") -> None:
        self.cwd, self.env, self.warm_code = Path(cwd), dict(env or {}), warm_code
        self.needed, self.refill_code = needed, refill_code
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # a kernel got ready, or a taker left
        self._waiting: list[tuple[float, int]] = []  # heap of (rank, ticket) of the takers
        self._tickets = itertools.count()
        self._ahead: deque[Future[KernelManager]] = deque()
        self._asked = 0  # kernels started or being started, ahead or on the spot
        self.started = 0
        """How many kernels were started (for progress lines and tests)."""
        self.taken_ahead = 0
        """How many of those were started ahead of need and then taken."""

    def _start(self, extra: str = "") -> KernelManager:
        with self._lock:
            self.started += 1
        return start_kernel(self.cwd, self.env, "\n".join(c for c in (self.warm_code, extra) if c))

    def _refill(self) -> None:
        with self._lock:
            refill = (self.needed is not None and not self._ahead
                      and self._asked < self.needed)
        if refill:
            self.start_ahead(extra=self.refill_code)

    def start_ahead(self, count: int = 1, extra: str = "") -> None:
        """Start kernels in the background until ``count`` are started ahead and not taken;
        ``extra`` runs in them after the warm code."""
        with self._lock:
            new = [Future() for _ in range(count - len(self._ahead))]
            self._ahead.extend(new)
            self._asked += len(new)

        def run(fut: Future[KernelManager]) -> None:
            try:
                fut.set_result(self._start(extra))
            except BaseException as exc:  # noqa: BLE001 - handed to whoever takes it
                fut.set_exception(exc)

        for fut in new:
            fut.add_done_callback(self._notify)
            threading.Thread(target=run, args=(fut,), name="gatrank-kernel-ahead",
                             daemon=True).start()

    def _notify(self, _fut: Future[KernelManager] | None = None) -> None:
        with self._changed:
            self._changed.notify_all()

    def take(self, rank: float = 0) -> KernelManager:
        """A started, ready kernel: the first ready of those started ahead if any (a failure to
        start it falls back to starting one now), else a new one. While several takers wait,
        the lowest ``rank`` is served first (ties: the first to ask). With ``needed`` given,
        the next kernel then starts ahead (once this one is ready, so that the two starts do
        not compete)."""
        km = self._take(rank)
        self._refill()
        return km

    def _take(self, rank: float) -> KernelManager:
        with self._changed:
            me = (rank, next(self._tickets))
            heapq.heappush(self._waiting, me)
            while True:
                ready = next((f for f in self._ahead if f.done()), None)
                if self._waiting[0] == me and (ready is not None or not self._ahead):
                    break
                self._changed.wait()
            heapq.heappop(self._waiting)
            if ready is not None:
                self._ahead.remove(ready)
            else:
                self._asked += 1
            self._changed.notify_all()  # the next taker in line may go on
        if ready is not None:
            try:
                km = ready.result()
            except Exception as exc:  # noqa: BLE001 - start one the plain way instead
                logger.info("the kernel started ahead failed (%s); starting another", exc)
            else:
                with self._lock:
                    self.taken_ahead += 1
                return km
        return self._start()

    def close(self) -> None:
        """Shut down the kernels started ahead and never taken."""
        with self._changed:
            left, self._ahead = list(self._ahead), deque()
            self._changed.notify_all()  # a taker still waiting starts its own
        for fut in left:
            try:
                fut.result().shutdown_kernel(now=True)
            except Exception as exc:  # noqa: BLE001 - nothing left to clean up
                logger.debug("kernel started ahead: %s", exc)
