"""What can be wrong with a manifest, a row, a graph file or a graph of a dataset, and the errors
that report it."""

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
    """One thing wrong with a manifest, a row, a graph file or a dataset's graph.

    ``line`` is the manifest line (header = 1, first data row = 2; None for manifest-level
    problems and for datasets). ``file`` is the graph file as written in the manifest for
    problems inside it, else the manifest path (for a dataset: its spec). ``code`` is a short
    machine id (see docs/failure_modes_data.md). ``index`` is the graph's position in a PyG
    dataset (``--dataset``; None for manifests and for dataset-level problems).
    """

    line: int | None
    id: str | None
    file: str | None
    problem: str
    fix: str
    code: str
    index: int | None = None

    @property
    def is_warning(self) -> bool:
        """True for problems that are reported but do not stop loading (``WARNING_CODES``)."""
        return self.code in WARNING_CODES

    @property
    def per_graph(self) -> bool:
        """A problem of one row or graph (``on_error="skip"`` drops it), not of the whole
        manifest or dataset."""
        return self.line is not None or self.index is not None


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1):]


def _format_problems(problems: Sequence[DataProblem]) -> str:
    """A fixed-width table: line (a dataset's: index), id, file, code, problem; the fix on the
    line below."""
    by_index = any(p.index is not None for p in problems) and all(p.line is None
                                                                   for p in problems)
    head = ("index" if by_index else "line", "id", "file", "code")
    positions = [p.index if by_index else p.line for p in problems]
    rows = [("-" if pos is None else str(pos), _clip(p.id or "-", 24), _clip(p.file or "-", 40),
             p.code) for p, pos in zip(problems, positions, strict=True)]
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
    """Raised with ALL problems of a manifest or dataset; ``.problems`` lists them, ``str()`` is
    a table."""

    def __init__(self, problems: Sequence[DataProblem], manifest: str | Path | None = None,
                 dataset: str | None = None):
        self.problems = list(problems)
        self.manifest = None if manifest is None else str(manifest)
        self.dataset = dataset
        where = (f" in dataset {dataset}" if dataset else
                 f" in manifest {self.manifest}" if self.manifest else "")
        n = len(self.problems)
        hint = ""
        if self.problems and all(p.per_graph for p in self.problems):
            hint = (' (fix them, or load with on_error="skip" to drop the bad '
                    f'{"graphs" if dataset else "rows"})')
        header = f"{n} problem{'s' if n != 1 else ''}{where}{hint}:"
        super().__init__(header + "\n" + _format_problems(self.problems))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.problems, self.manifest, self.dataset))


class UnsafeFileError(ValueError):
    """A torch file holds pickled objects outside the allowlist; it was not loaded."""


class _FileProblem(Exception):
    """Internal: a loader found something wrong inside one graph file."""

    def __init__(self, code: str, problem: str, fix: str):
        super().__init__(problem)
        self.code, self.problem, self.fix = code, problem, fix
