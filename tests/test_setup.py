"""setup.py and MANIFEST.in, as a new user meets them: gatrank built into a wheel (from its sdist)
and installed into a fresh virtual environment runs ``gatrank notebooks`` and ``gatrank suite``
from an empty folder, far from this checkout.

The one place a real wheel is built. Offline: the build uses this environment's setuptools
(``--no-build-isolation``) and the new environment reuses this one's installed dependencies
through a folder of links to them that leaves out this checkout's own (editable) gatrank, so the
only gatrank it can import is the wheel's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import time
import zipfile
from pathlib import Path

import nbformat
import pytest
import yaml

from gatrank.project import NOTEBOOKS

ROOT = Path(__file__).resolve().parents[1]
NOT_SOURCES = shutil.ignore_patterns(".git", ".venv", "reports", "build", "dist", "*.egg-info",
                                     "__pycache__", ".*_cache", "runs", ".ipynb_checkpoints")


def _run(argv: list[str], cwd: Path, env: dict[str, str] | None = None,
         timeout: int = 300) -> str:
    res = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert res.returncode == 0, f"{argv}:\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}"
    return res.stdout


def _build_wheel(tmp: Path) -> Path:
    """sdist from a copy of the checkout, then the wheel from the sdist (as ``python -m build``
    does): both must carry the notebooks and params. Returns the wheel."""
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=NOT_SOURCES)
    code = "import sys; from setuptools import build_meta as b; print(b.build_sdist(sys.argv[1]))"
    sdist = tmp / "sdist" / _run([sys.executable, "-c", code, str(tmp / "sdist")],
                                 src).split()[-1]
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    for folder, pattern in (("notebooks", "*.ipynb"), ("params", "*.yaml")):
        for f in (ROOT / folder).glob(pattern):
            assert f"{folder}/{f.name}" in names, f"the sdist lacks {folder}/{f.name}"
    _run([sys.executable, "-m", "pip", "wheel", str(sdist), "--no-deps", "--no-build-isolation",
          "--no-index", "-q", "-w", str(tmp / "wheel")], tmp)
    (wheel,) = (tmp / "wheel").glob("gatrank-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        for folder, pattern in (("notebooks", "*.ipynb"), ("params", "*.yaml")):
            for f in (ROOT / folder).glob(pattern):
                assert zf.read(f"gatrank/_bundled/{folder}/{f.name}") == f.read_bytes(), f
    return wheel


def _venv(tmp: Path) -> tuple[Path, dict[str, str]]:
    """A fresh virtual environment seeing this one's dependencies but no gatrank; its bin folder
    and the environment variables to run it with."""
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp)
    deps = tmp / "deps"
    deps.mkdir()
    for lib in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}:
        for entry in Path(lib).iterdir():
            if not entry.name.lower().startswith(("gatrank", "__editable__")):
                (deps / entry.name).symlink_to(entry)
    (site,) = (venv / "lib").glob("python*/site-packages")
    (site / "deps.pth").write_text(f"{deps}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    # nbconvert's HTML templates: where a real install would put them, under the venv's
    # share/jupyter; with --no-deps they stay in this environment's
    env.update(JUPYTER_PATH=str(Path(sys.prefix) / "share" / "jupyter"), PYTHONNOUSERSITE="1",
               OMP_NUM_THREADS="1", PATH=f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}")
    return venv / "bin", env


@pytest.mark.slow
def test_installed_wheel_writes_the_notebooks_and_runs_the_suite_from_an_empty_folder(
        tmp_path, tiny_manifest):
    t0 = time.perf_counter()
    wheel = _build_wheel(tmp_path)
    bin_dir, env = _venv(tmp_path)
    _run([str(bin_dir / "python"), "-m", "pip", "install", "--no-deps", "--no-index", "-q",
          str(wheel)], tmp_path, env)
    built = time.perf_counter() - t0
    empty = tmp_path / "empty"
    empty.mkdir()

    t1 = time.perf_counter()
    out = _run(["gatrank", "notebooks", "./nb", "--manifest", str(tiny_manifest)], empty, env)
    assert "wrote 11 files" in out
    for name in NOTEBOOKS:
        nb = nbformat.read(str(empty / "nb" / "notebooks" / f"{name}.ipynb"), as_version=4)
        cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
        assert f'manifest: str = "{tiny_manifest}"' in cell.source, name
        raw = yaml.safe_load((empty / "nb" / "params" / f"{name}.yaml").read_text())
        assert raw["manifest"] == str(tiny_manifest)
    assert (empty / "nb" / "params" / "config_example.yaml").is_file()

    t2 = time.perf_counter()
    out = _run(["gatrank", "suite", "--notebooks", "01_data_checks", "--manifest",
                str(tiny_manifest), "--threads", "1"], empty, env)
    assert "suite PASS" in out, out
    report = (empty / "reports" / "latest").resolve()  # the default report folder: under cwd
    summary = json.loads((report / "summary.json").read_text())
    assert summary["status"] == "PASS" and summary["python"] == str(bin_dir / "python")
    assert summary["notebooks"][0]["parameters"]["manifest"] == str(tiny_manifest)
    executed = nbformat.read(str(report / "01_data_checks.ipynb"), as_version=4)
    source = Path(executed.metadata.papermill.input_path)
    # the wheel's own copy ran: gatrank imported from the venv, not from this checkout
    assert source.parent == next((bin_dir.parent / "lib").glob(
        "python*/site-packages")) / "gatrank" / "_bundled" / "notebooks", source
    assert (report / "01_data_checks.html").stat().st_size > 0
    print(f"\nwheel built and installed in {built:.1f} s, gatrank notebooks {t2 - t1:.1f} s, "
          f"whole test {time.perf_counter() - t0:.1f} s")
