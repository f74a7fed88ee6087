"""The main job: run the five notebooks headlessly and write a report folder.

:func:`run_suite` executes ``notebooks/01_data_checks`` ... ``05_eval`` with papermill, each with
its ``params/<notebook>.yaml``, in a kernel started from *this* Python interpreter (so a fresh
virtual environment works with no kernel registered by hand). Notebooks that do not need each
other run concurrently, as many at once as there are cores (``jobs``; 05_eval waits for
04_full_train's checkpoint, see :data:`gatrank.project.NEEDS`), each kernel with its share of
the cores as torch threads, and the next kernel started (and its imports done) while the
current ones run: :mod:`gatrank.suite.schedule`, :mod:`gatrank.suite.kernel`. ``jobs=1`` is the
plain sequential run. Per run it writes::

    <out>/<notebook>.ipynb          the executed notebook (errors included)
    <out>/<notebook>.html           offline HTML, no CDN, no require.js; it loads plotly.js and
    <out>/plotly.min.js             JupyterLab's stylesheet from these two, one copy for all
    <out>/notebook.css              (inlined in each instead with ``self_contained``)
    <out>/<notebook>.results.json   what the notebook recorded (checks, metrics)
    <out>/<notebook>/               its training output (checkpoints, metrics.jsonl)
    <out>/summary.json              status, duration and results of every notebook
    <out>/index.html                the runbook's checks as a pass/fail table, links to reports

A notebook that fails still gets its executed notebook and HTML (papermill puts the error at
the top, the HTML adds a banner), the index marks it, and the others still run. The summary and
the index list the notebooks in their order, whatever order they finished in.

Which notebooks: :func:`gatrank.project.notebook_folders` (the project's ``notebooks/`` and
``params/``, else the copies an installed wheel bundles).
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from gatrank import __version__
from gatrank.io import atomic_write_text, write_json
from gatrank.project import HEADLESS_ENV, NEEDS, NOTEBOOKS, STEPS, notebook_folders, project_root
from gatrank.suite.export import export_html, prune_widget_state
from gatrank.suite.index import render_index
from gatrank.suite.kernel import KernelSupply, adopting, import_lines, start_kernel
from gatrank.suite.schedule import default_jobs, kernel_threads, run_concurrently, start_order

__all__ = [
    "NOTEBOOKS",
    "NotebookResult",
    "SuiteResult",
    "run_suite",
    "notebook_parameters",
    "default_out_dir",
]

logger = logging.getLogger(__name__)

@dataclass
class NotebookResult:
    name: str
    status: str
    """``PASS``, ``PASS (with warnings)``, ``FAIL``, ``FAIL (red flags)``, ``ERROR`` (the
    notebook raised) or ``NO RESULTS`` (it ran but recorded nothing)."""
    duration_s: float
    ipynb: str
    """Path of the executed notebook, relative to the report folder."""
    html: str
    parameters: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    results: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.status.startswith("PASS")


@dataclass
class SuiteResult:
    out_dir: Path
    notebooks: list[NotebookResult]
    duration_s: float
    summary: dict[str, Any]

    @property
    def ok(self) -> bool:
        """Every notebook ran and passed its checks."""
        return all(nb.ok for nb in self.notebooks)

    @property
    def exit_code(self) -> int:
        """0 when everything passed, 1 when a notebook failed or a check did not pass."""
        return 0 if self.ok else 1


REFILL_IMPORTS = ("import plotly.io._renderers",)
"""Imported, besides the notebooks' own import lines, in a kernel started while notebooks run:
what ``gatrank.notebook.start`` imports when it sets up the figures' renderer. plotly's
renderers import nbformat, whose jsonschema builds ~40 IRI grammars on import where jupyterlab
is installed: 2.7 s that 05_eval would otherwise pay after 04_full_train, the other core idle.
Not in the first kernels: 04_full_train waits for its kernel (13.6 s instead of 7.6 s to be
ready, three imports competing for two cores)."""


def default_out_dir() -> Path:
    """``<project>/reports/<UTC timestamp>`` (``./reports/...`` outside a project checkout)."""
    root = project_root() or Path.cwd()
    return root / "reports" / datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")


# --------------------------------------------------------------------------- parameters


def notebook_parameters(
    notebook: str | Path,
    params_file: str | Path | None,
    overrides: Mapping[str, Any],
) -> dict[str, Any]:
    """The parameters to inject: the YAML file's, then ``overrides``; only names the notebook
    declares in its ``parameters`` cell.

    Raises:
        ValueError: the YAML file is not a mapping or names a parameter the notebook lacks.
    """
    import papermill  # deferred: seconds to import, and only a run needs it

    declared = set(papermill.inspect_notebook(str(notebook)))
    params: dict[str, Any] = {}
    if params_file is not None and Path(params_file).is_file():
        raw = yaml.safe_load(Path(params_file).read_text()) or {}
        if not isinstance(raw, dict):
            raise ValueError(f"{params_file}: expected a mapping of parameter: value")
        unknown = sorted(set(raw) - declared)
        if unknown:
            raise ValueError(
                f"{params_file}: unknown parameter(s) {unknown} for {Path(notebook).name}; "
                f"it declares {sorted(declared)}"
            )
        params.update(raw)
    params.update({k: v for k, v in overrides.items() if k in declared and v is not None})
    return params


# --------------------------------------------------------------------------- running


def _read_results(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        logger.warning("could not read %s: %s", path, exc)
        return None


def _execute(src: Path, dst: Path, params: dict[str, Any], km: Any,
             timeout: int | None) -> str:
    """Run one notebook in the started kernel ``km`` (shut down when done); returns '' or the
    error text. The output notebook is written either way (papermill saves it with the
    traceback and an error cell at the top)."""
    import papermill  # deferred: seconds to import, and only a run needs it
    from papermill.exceptions import PapermillExecutionError

    try:
        # no cwd: papermill would chdir this whole process, which concurrent notebooks share;
        # the kernel was started in the notebook folder instead
        papermill.execute_notebook(
            str(src), str(dst), parameters=params, progress_bar=False, log_output=False,
            kernel_manager_class=adopting(km), shutdown_kernel="immediate",
            execution_timeout=timeout,
        )
    except PapermillExecutionError as exc:
        return f"{exc.ename}: {exc.evalue} (cell {exc.exec_count})"
    except Exception as exc:  # noqa: BLE001 - a kernel that dies must not stop the suite
        if not dst.is_file():
            import nbformat  # deferred with papermill: seconds to import

            nb = nbformat.read(str(src), as_version=4)
            nbformat.write(nb, str(dst))
        return f"{type(exc).__name__}: {exc}"
    finally:
        if km.has_kernel:  # papermill failed before nbclient took the kernel over
            km.shutdown_kernel(now=True)
    return ""


def run_suite(
    manifest: str | Path | None = None,
    out_dir: str | Path | None = None,
    *,
    dataset: str | None = None,
    notebooks: Sequence[str] | None = None,
    notebooks_dir: str | Path | None = None,
    params_dir: str | Path | None = None,
    parameters: Mapping[str, Any] | None = None,
    timeout: int | None = None,
    threads: int | None = None,
    jobs: int | None = None,
    self_contained: bool = False,
    progress: Callable[[str], None] | None = None,
) -> SuiteResult:
    """Execute the notebooks and write the report folder (see the module docstring).

    Args:
        manifest: passed to every notebook (``None``: the embedded default).
        dataset: a PyG dataset passed to every notebook instead of ``manifest``
            (``package.module:name``, importable by the kernels, or a ``.pt`` file).
        out_dir: the report folder; default :func:`default_out_dir` (and ``reports/latest``
            then points at it).
        notebooks: names (stems) to run, in :data:`NOTEBOOKS` order; default all five.
        notebooks_dir, params_dir: default :func:`gatrank.project.notebook_folders`; given
            ``notebooks_dir``, ``params_dir`` defaults to the ``params/`` beside it.
        parameters: overrides for every notebook that declares them (e.g. ``config``,
            ``model``, ``loss``, ``seed``); applied after the params files.
        timeout: seconds a single cell may run (default: no limit).
        threads: CPU threads per kernel (``OMP_NUM_THREADS``). Default: the cores shared out
            among the notebooks running at once; torch's own choice when ``jobs`` is 1.
        jobs: notebooks run at once (default :func:`~gatrank.suite.schedule.default_jobs`: the
            CPU count, capped by free memory); 1 runs them one after another.
        self_contained: each HTML report inlines plotly.js and its stylesheet (one file to
            mail) instead of loading the folder's one ``plotly.min.js`` and ``notebook.css``.
        progress: called with a line when a notebook starts and when it finishes.

    Raises:
        ValueError: an unknown notebook, ``jobs`` below 1, or a params file naming a parameter
            its notebook lacks (all checked before any notebook starts).
    """
    t0 = time.perf_counter()
    nb_dir, p_dir, names = _notebooks_to_run(notebooks, notebooks_dir, params_dir)
    if jobs is not None and jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    jobs = min(jobs, len(names)) if jobs else default_jobs(len(names))
    out = (Path(out_dir) if out_dir else default_out_dir()).resolve()
    out.mkdir(parents=True, exist_ok=True)
    overrides = _overrides(manifest, dataset, parameters, out)
    per_kernel = kernel_threads(jobs, threads)
    env = {HEADLESS_ENV: "1"}  # no live redraws: no front end would ever show them
    if per_kernel:
        env.update({"OMP_NUM_THREADS": str(per_kernel), "MKL_NUM_THREADS": str(per_kernel)})
    # one after another (jobs=1) is the plain sequential run: each kernel started when needed
    supply = KernelSupply(nb_dir, env, "\n".join(import_lines(
        [nb_dir / f"{n}.ipynb" for n in names])), needed=len(names),
        refill_code="\n".join(REFILL_IMPORTS)) if jobs > 1 else None
    if supply is not None:  # the first kernels start and import while the parameters are read
        supply.start_ahead(jobs)
        # and papermill imports meanwhile (nbformat's jsonschema takes seconds to import)
        threading.Thread(target=importlib.import_module, args=("papermill",),
                         name="gatrank-import-papermill", daemon=True).start()
    # the first ready kernel goes to the notebook the others wait on (04 before 01)
    rank = {n: i for i, n in enumerate(start_order(names, NEEDS))}
    params: dict[str, dict[str, Any]] = {}
    tags = {n: f"[{i}/{len(names)}]" for i, n in enumerate(names, 1)}

    def kernel(priority: int) -> Any:
        return start_kernel(nb_dir, env) if supply is None else supply.take(priority)

    def run_one(name: str) -> NotebookResult:
        return _run_notebook(name, nb_dir, params[name], out, timeout,
                             lambda: kernel(rank[name]), tag=tags[name],
                             self_contained=self_contained)

    started, done = _progress_lines(progress, tags, jobs)
    try:
        params.update({n: notebook_parameters(nb_dir / f"{n}.ipynb", p_dir / f"{n}.yaml",
                                              overrides) for n in names})
        by_name = run_concurrently(names, run_one, jobs=jobs, needs=NEEDS, on_start=started,
                                   on_done=done)
    finally:
        if supply is not None:
            supply.close()
    results = list(by_name.values())
    duration = round(time.perf_counter() - t0, 1)
    summary = _summary(results, out, overrides, duration, per_kernel, jobs)
    write_json(out / "summary.json", summary)
    atomic_write_text(out / "index.html", render_index(summary))
    if out_dir is None:
        _link_latest(out)
    return SuiteResult(out_dir=out, notebooks=results, duration_s=duration, summary=summary)


def _progress_lines(progress: Callable[[str], None] | None, tags: Mapping[str, str],
                    jobs: int) -> tuple[Callable[..., None], Callable[..., None]]:
    """The scheduler's ``on_start`` and ``on_done``: a line to ``progress`` when a notebook
    starts (only when several run at once) and when it finishes."""

    def started(name: str, running: list[str]) -> None:
        if progress is not None and jobs > 1:
            progress(f"  start {name:<15} (running: {', '.join(running)})")

    def done(name: str, res: NotebookResult, running: list[str]) -> None:
        if progress is not None:
            progress(f"{tags[name]} {name:<15} {res.status:<20} {res.duration_s:6.1f} s"
                     + (f"  {res.error.splitlines()[0][:120]}" if res.error else "")
                     + (f"  (running: {', '.join(running)})" if running else ""))

    return started, done


def _notebooks_to_run(notebooks: Sequence[str] | None, notebooks_dir: str | Path | None,
                      params_dir: str | Path | None) -> tuple[Path, Path, list[str]]:
    """The notebook folder, the params folder and the names to run, each checked to exist.

    Raises:
        FileNotFoundError: no notebook folder (the one given, or none found).
        ValueError: naming the notebooks that are not in the folder, and those that are.
    """
    if notebooks_dir:
        nb_dir = Path(notebooks_dir)
        if not nb_dir.is_dir():
            raise FileNotFoundError(f"notebook folder {nb_dir} not found (notebooks_dir)")
        beside = nb_dir.parent / "params"
    else:
        nb_dir, beside = notebook_folders()
    p_dir = Path(params_dir) if params_dir else beside
    names = list(notebooks) if notebooks else list(NOTEBOOKS)
    unknown = [n for n in names if not (nb_dir / f"{n}.ipynb").is_file()]
    if unknown:
        raise ValueError(f"no notebook(s) {unknown} in {nb_dir}; available: "
                         f"{sorted(p.stem for p in nb_dir.glob('*.ipynb'))}")
    return nb_dir, p_dir, names


def _overrides(manifest: str | Path | None, dataset: str | None,
               parameters: Mapping[str, Any] | None, out: Path) -> dict[str, Any]:
    """The parameters every notebook gets: ``parameters``, the manifest (or the dataset, the
    other one emptied) and config as absolute paths (the kernels run in the notebook folder),
    and ``run_dir`` = the report folder."""
    if manifest and dataset:
        raise ValueError(f"give a manifest or a dataset, not both (manifest={str(manifest)!r}, "
                         f"dataset={dataset!r})")
    overrides: dict[str, Any] = dict(parameters or {})
    if manifest:
        overrides["manifest"] = str(Path(manifest).expanduser().resolve())
        overrides["dataset"] = ""
    if dataset:
        # deferred: gatrank.data imports torch (4 s here), which this process, starting and
        # watching kernels, otherwise never needs
        from gatrank.data import is_dataset_file

        overrides["dataset"] = (str(Path(dataset).expanduser().resolve())
                                if is_dataset_file(dataset) else dataset)
        overrides["manifest"] = ""
    if overrides.get("config"):
        overrides["config"] = str(Path(overrides["config"]).expanduser().resolve())
    overrides["run_dir"] = str(out)
    return overrides


def _run_notebook(name: str, nb_dir: Path, params: dict[str, Any], out: Path,
                  timeout: int | None, kernel: Callable[[], Any], *, tag: str,
                  self_contained: bool = False) -> NotebookResult:
    """Execute one notebook into ``out`` in a kernel from ``kernel()``, read what it recorded
    and export its HTML."""
    src = nb_dir / f"{name}.ipynb"
    (out / f"{name}.results.json").unlink(missing_ok=True)
    logger.debug("%s %s: running with %s", tag, name, params)
    km = kernel()
    t = time.perf_counter()
    error = _execute(src, out / f"{name}.ipynb", params, km, timeout)
    duration = round(time.perf_counter() - t, 1)
    prune_widget_state(out / f"{name}.ipynb")
    rec = _read_results(out / f"{name}.results.json")
    status = "ERROR" if error else rec["label"] if rec else "NO RESULTS"
    export_html(out / f"{name}.ipynb", out / f"{name}.html", error=error,
                self_contained=self_contained)
    return NotebookResult(name=name, status=status, duration_s=duration, ipynb=f"{name}.ipynb",
                          html=f"{name}.html", parameters=params, error=error, results=rec)


def _summary(results: Sequence[NotebookResult], out: Path, overrides: Mapping[str, Any],
             duration: float, threads: int | None, jobs: int) -> dict[str, Any]:
    """What ``summary.json`` holds (and ``index.html`` shows)."""
    return {
        "gatrank": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "out_dir": str(out),
        "manifest": overrides.get("manifest", "") or ("" if overrides.get("dataset") else
                                                     "(embedded default: chembl-activity)"),
        "dataset": overrides.get("dataset", ""),
        "status": "PASS" if all(r.ok for r in results) else "FAIL",
        "duration_s": duration,
        "threads": threads,
        "jobs": jobs,
        "python": sys.executable,
        "notebooks": [{**asdict(r), "step": STEPS.get(r.name, r.name)} for r in results],
    }


def _link_latest(out: Path) -> None:
    """Point ``reports/latest`` at the newest default report folder (best effort)."""
    latest = out.parent / "latest"
    try:
        if latest.is_symlink() or latest.exists():
            if not latest.is_symlink():
                return  # a real folder someone made: leave it alone
            latest.unlink()
        latest.symlink_to(out.name, target_is_directory=True)
    except OSError as exc:
        logger.info("could not update %s: %s", latest, exc)
