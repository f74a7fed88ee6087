"""Running one live case through the real CLI, in process, and the output the page shows."""

from __future__ import annotations

import contextlib
import io
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from gatrank.cli import main
from tools.failure_modes.cases import FailureMode

__all__ = ["CaseRun", "run_case", "shown_output"]


@dataclass
class CaseRun:
    """The outcome of one live case: exit code and both output streams."""

    exit_code: int
    stdout: str
    stderr: str
    folder: Path = field(default_factory=Path)

    @property
    def output(self) -> str:
        return self.stdout + self.stderr



def run_case(case: FailureMode, folder: str | Path) -> CaseRun:
    """Build ``case`` in ``folder`` and run the CLI on it in this process, inside ``folder``.

    The case sees relative paths, as a user in their data folder would, so what it prints does
    not depend on where ``folder`` is. Log records of level WARNING and above are captured with
    stderr, which is what ``gatrank`` shows at the command line.
    """
    if case.build is None:
        raise ValueError(f"case {case.id!r} has no command to run (see its tested_by)")
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    out, err = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(err)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.setLevel(logging.WARNING)
    root = logging.getLogger()
    # with a handler on the root logger, main()'s logging.basicConfig leaves logging alone
    root.addHandler(handler)
    previous = os.getcwd()
    os.chdir(folder)
    try:
        argv = case.build(Path("."))
        err.seek(0)
        err.truncate()  # keep only what the command itself prints
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse's usage errors
                code = exc.code if isinstance(exc.code, int) else 2
    finally:
        os.chdir(previous)
        root.removeHandler(handler)
    return CaseRun(code, out.getvalue(), err.getvalue(), folder)


def shown_output(case: FailureMode, run: CaseRun) -> str:
    """The part of the output the page shows, with the case folder written as ``<dir>``."""
    if case.excerpt == "dropped":
        lines = run.stdout.splitlines()
        start = next(i for i, ln in enumerate(lines) if ln.startswith("dropped "))
        end = next((i for i in range(start + 1, len(lines)) if not lines[i].strip()), len(lines))
        text = "\n".join(lines[start:end])
    else:
        text = run.output
    text = text.replace(str(run.folder), "<dir>")
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines())

