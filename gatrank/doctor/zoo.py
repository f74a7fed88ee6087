"""Running the fault zoo: the doctor on every fault of :mod:`gatrank.doctor.faults` (and on the
healthy zoo of :mod:`gatrank.doctor.healthy`), and the confusion table of expected against
named causes that ``gatrank doctor --zoo-table`` writes into docs/doctor.md."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gatrank.datasets import DEFAULT_DATASET, sample_graphs
from gatrank.doctor.faults import FAULTS, get_fault
from gatrank.doctor.run import diagnose
from gatrank.io import atomic_write_text

__all__ = [
    "ZooResult",
    "zoo_graphs",
    "run_zoo",
    "zoo_markdown",
    "write_zoo_page",
]

logger = logging.getLogger(__name__)

@dataclass
class ZooResult:
    """What the doctor said about one fault (or about the healthy setup: ``fault`` None)."""

    name: str
    """Fault name, or ``healthy DATASET (seed k)``."""
    expected: str | None
    """The fault's cause id; None for a healthy run (no cause may be named)."""
    named: list[str]
    """Cause ids the doctor named, most likely first."""
    verdict: str
    seconds: float
    also: tuple[str, ...] = ()
    report: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def fix(self) -> str:
        """What verification said of the first cause's fix, in a few words: ``verified
        (epoch 40)``, ``needs a human``, ``not enough``; ``-`` without causes or
        verification."""
        causes = self.report.get("causes") or []
        rec = causes[0].get("verification") if causes else None
        if not rec:
            return "-"
        status = rec["status"]
        if status == "verified":
            return f"verified (epoch {rec['epoch']})" if rec.get("epoch") else \
                f"verified (learns, {rec.get('epochs_run')} epochs)"
        return {"human": "needs a human", "not_enough": "not enough",
                "consequence": "another cause's", "not_applicable": "not tried"}[status]

    @property
    def ok(self) -> bool:
        """Healthy: no cause named. Fault: its cause first, or second behind an overlapping
        cause listed in ``Fault.also``."""
        if self.expected is None:
            return not self.named and self.verdict == "healthy"
        if self.named[:1] == [self.expected]:
            return True
        return self.named[1:2] == [self.expected] and self.named[0] in self.also


def zoo_graphs(n: int = 128, seed: int = 0, dataset: str = DEFAULT_DATASET):
    """The zoo's sample: ``n`` graphs of an embedded data set (default chembl-activity; see
    :func:`gatrank.datasets.sample_graphs`)."""
    return sample_graphs(dataset, n, seed)


def run_zoo(graphs=None, *, names: Sequence[str] | None = None,
            healthy_seeds: Sequence[int] = (0, 1, 2), seed: int = 0, options=None,
            healthy: Sequence[str] | None = None, n: int = 128,
            on_result: Callable[[ZooResult], None] | None = None) -> list[ZooResult]:
    """Run the doctor on every fault, then on every set-up of the healthy zoo
    (:data:`gatrank.doctor.healthy.HEALTHY`) for each of ``healthy_seeds``.

    Args:
        graphs: the GraphSet to inject into (default: :func:`zoo_graphs`).
        names: faults to run (default: all, in zoo order).
        healthy_seeds: seeds of the healthy runs.
        seed: seed of the fault runs.
        options: :class:`gatrank.doctor.DoctorOptions` for every run.
        healthy: healthy set-ups to run (default: all), ``n`` graphs of each
            (:func:`gatrank.doctor.healthy.healthy_graphs`).
        on_result: called with each result as it arrives (progress display).
    """
    from gatrank.doctor.healthy import HEALTHY, diagnose_healthy, healthy_graphs

    gs = zoo_graphs(n) if graphs is None else graphs
    results = []

    def done(res: ZooResult) -> None:
        logger.info("zoo: %s -> %s %s (%s)", res.name, res.verdict, res.named[:3],
                    "ok" if res.ok else "WRONG")
        results.append(res)
        if on_result is not None:
            on_result(res)

    for name in names if names is not None else FAULTS:
        fault = get_fault(name)
        # a cause judged on held-out graphs needs a sample large enough to judge
        data = zoo_graphs(fault.graphs) if fault.graphs > len(gs) else gs
        t0 = time.perf_counter()
        report = diagnose(data, inject=fault.name, options=options, seed=seed)
        done(ZooResult(name, fault.cause, report.cause_ids, report.verdict,
                       time.perf_counter() - t0, fault.also, report.to_dict()))
    for name in healthy if healthy is not None else HEALTHY:
        entry = HEALTHY[name]
        data = healthy_graphs(entry, n)
        for s in healthy_seeds:
            t0 = time.perf_counter()
            report = diagnose_healthy(entry, s, graphs=data, options=options)
            done(ZooResult(f"healthy {name} (seed {s})", None, report.cause_ids,
                           report.verdict, time.perf_counter() - t0, (), report.to_dict()))
    return results


def zoo_markdown(results: Sequence[ZooResult]) -> str:
    """The confusion table as Markdown: one row per fault with the causes named, then the
    matrix of expected cause (rows) against the cause named first (columns)."""
    lines = ["| fault | injected into | expected cause | causes named, most likely first | "
             "verdict | right | fix verified | seconds |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        where = FAULTS[r.name].where if r.name in FAULTS else "-"
        named = ", ".join(f"`{c}`" for c in r.named[:4]) or "none"
        expected = f"`{r.expected}`" if r.expected else "none"
        lines.append(f"| {r.name} | {where} | {expected} | {named} | {r.verdict} | "
                     f"{'yes' if r.ok else '**no**'} | {r.fix} | {r.seconds:.1f} |")
    rows = list(dict.fromkeys(r.expected or "none" for r in results))
    cols = list(dict.fromkeys([*rows, *(r.named[0] if r.named else "none" for r in results)]))
    counts: dict[tuple[str, str], int] = {}
    for r in results:
        key = (r.expected or "none", r.named[0] if r.named else "none")
        counts[key] = counts.get(key, 0) + 1
    short = {c: f"{k}" for k, c in enumerate(cols, 1)}
    lines += ["", "Expected cause (rows) against the cause named first (columns; numbered as "
              "the rows' cause ids below). The diagonal is right.", "",
              "| expected \\ named first | " + " | ".join(short[c] for c in cols) + " |",
              "|---|" + "---|" * len(cols)]
    for row in rows:
        cells = [str(counts.get((row, c), "")) for c in cols]
        lines.append(f"| {short[row]}. `{row}` | " + " | ".join(cells) + " |")
    extra = [c for c in cols if c not in rows]
    if extra:
        lines += [""] + [f"{short[c]}. `{c}` (named, never expected)" for c in extra]
    right = sum(r.ok for r in results)
    lines += ["", f"{right} of {len(results)} runs right; total "
              f"{sum(r.seconds for r in results):.0f} s."]
    return "\n".join(lines)


_START, _END = "<!-- zoo-table:start -->", "<!-- zoo-table:end -->"


def write_zoo_page(path: str | Path, results: Sequence[ZooResult], *, command: str = "") -> None:
    """Write the confusion table into ``path`` between ``<!-- zoo-table:start -->`` and
    ``<!-- zoo-table:end -->`` (text outside the markers is kept; a page without them gets
    them appended)."""
    write_marked(path, _START, _END, zoo_markdown(results), command=command)


def write_marked(path: str | Path, start: str, end: str, body: str, *, command: str = "") -> None:
    """Put ``body`` (with a line naming ``command``) into the page at ``path`` between the
    markers ``start`` and ``end``, keeping the text outside them; a page without them gets
    them appended."""
    page = Path(path)
    text = page.read_text() if page.is_file() else "# The collapse doctor\n"
    made = f"Generated by `{command}`." if command else ""
    block = f"{start}\n{made}\n\n{body}\n{end}"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    atomic_write_text(page, text)
