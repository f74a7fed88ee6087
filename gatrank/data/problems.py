"""What can be wrong with a manifest, a row or a graph file, and the errors that report it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["DataProblem", "DataError", "UnsafeFileError", "WARNING_CODES"]

WARNING_CODES = frozenset({"singleton_group"})
"""Problem codes that are reported but never stop loading: the rows are harmless."""


@dataclass(frozen=True)
class DataProblem:
    """One thing wrong with a manifest, a row or a graph file.

    ``line`` is the manifest line (header = 1, first data row = 2; None for manifest-level
    problems). ``file`` is the graph file as written in the manifest for problems inside it,
    else the manifest path. ``code`` is a short machine id (see docs/failure_modes_data.md).
    """

    line: int | None
    id: str | None
    file: str | None
    problem: str
    fix: str
    code: str

    @property
    def is_warning(self) -> bool:
        """True for problems that are reported but do not stop loading (``WARNING_CODES``)."""
        return self.code in WARNING_CODES


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1):]


def _format_problems(problems: Sequence[DataProblem]) -> str:
    """A fixed-width table: line, id, file, code, problem; the fix on the line below."""
    head = ("line", "id", "file", "code")
    rows = [
        ("-" if p.line is None else str(p.line), _clip(p.id or "-", 24),
         _clip(p.file or "-", 40), p.code)
        for p in problems
    ]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(head)]
    indent = " " * (sum(widths) + 2 * len(widths))

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if i == 0 else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    out = [fmt(head) + "  problem"]
    for p, r in zip(problems, rows, strict=True):
        out.append(f"{fmt(r)}  {p.problem}")
        out.append(f"{indent}fix: {p.fix}")
    return "\n".join(out)


class DataError(ValueError):
    """Raised with ALL problems of a manifest; ``.problems`` lists them, ``str()`` is a table."""

    def __init__(self, problems: Sequence[DataProblem], manifest: str | Path | None = None):
        self.problems = list(problems)
        self.manifest = None if manifest is None else str(manifest)
        where = f" in manifest {self.manifest}" if self.manifest else ""
        n = len(self.problems)
        hint = ""
        if self.problems and all(p.line is not None for p in self.problems):
            hint = ' (fix them, or load with on_error="skip" to drop the bad rows)'
        header = f"{n} problem{'s' if n != 1 else ''}{where}{hint}:"
        super().__init__(header + "\n" + _format_problems(self.problems))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.problems, self.manifest))


class UnsafeFileError(ValueError):
    """A torch file holds pickled objects outside the allowlist; it was not loaded."""


class _FileProblem(Exception):
    """Internal: a loader found something wrong inside one graph file."""

    def __init__(self, code: str, problem: str, fix: str):
        super().__init__(problem)
        self.code, self.problem, self.fix = code, problem, fix
