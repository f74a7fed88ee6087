"""Build hook: the wheel carries the notebooks and their params as package data.

``notebooks/`` and ``params/`` at the top of the repository are the only copy in git (the
project layout of DESIGN.md). ``build_py`` copies them into the built package as
``gatrank/_bundled/notebooks/*.ipynb`` and ``gatrank/_bundled/params/*.yaml``, so ``gatrank
suite`` and ``gatrank notebooks`` work in an environment the wheel was installed into, far from
this checkout. Every other setting is in pyproject.toml.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
# gatrank/project.py (BUNDLED) reads them back from here: the two must name one folder
BUNDLE = ("gatrank", "_bundled")
SOURCES = {"notebooks": "*.ipynb", "params": "*.yaml"}


class BuildPyWithNotebooks(build_py):
    """``build_py`` that also copies the top-level notebooks and params into the package."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:  # an editable install reads the checkout's own folders
            return
        for folder, pattern in SOURCES.items():
            files = sorted((HERE / folder).glob(pattern))
            if not files:
                raise FileNotFoundError(
                    f"{HERE / folder}: no {pattern} to bundle into the wheel; build from the "
                    "repository or from an sdist that includes notebooks/ and params/ "
                    "(MANIFEST.in)"
                )
            dest = Path(self.build_lib, *BUNDLE, folder)
            shutil.rmtree(dest, ignore_errors=True)  # a reused build/ keeps deleted notebooks
            dest.mkdir(parents=True)
            for f in files:
                shutil.copyfile(f, dest / f.name)


setup(cmdclass={"build_py": BuildPyWithNotebooks})
