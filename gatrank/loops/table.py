"""Running the loop zoo (:mod:`gatrank.loops.zoo`) and its table in docs/doctor.md: each
loop on the shared set-up, what the Monitor's diagnosis named, and whether that is right.

``gatrank doctor --zoo-table docs/doctor.md`` writes the table between
``<!-- loop-table:start -->`` and ``<!-- loop-table:end -->``, beside the fault zoo's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

from gatrank import Monitor
from gatrank.doctor.report import DoctorReport
from gatrank.doctor.zoo import write_marked
from gatrank.loops.zoo import HEALTHY_LOOPS, LOOP_FAULTS, LoopCase, LoopSetup, rank_loss
from gatrank.runtime import set_seed

__all__ = ["LoopResult", "loop_graphs", "run_loop", "run_loop_zoo", "loop_markdown",
           "write_loop_page"]

_START, _END = "<!-- loop-table:start -->", "<!-- loop-table:end -->"


def loop_graphs(n: int = 32) -> list[Data]:
    """The first ``n`` graphs (the runbook's overfit test: 32) of the embedded default data
    (chembl-activity) as PyG ``Data``, each with a float ``y`` ``[1]``."""
    from gatrank.data import load_graphs
    from gatrank.datasets import default_manifest

    return list(load_graphs(default_manifest()).subset(list(range(n))).graphs)


def run_loop(case: LoopCase, seed: int = 0, out_dir: str | Path | None = None, *,
             graphs: list[Data] | None = None) -> tuple[Monitor, DoctorReport]:
    """Run ``case``'s loop on the shared set-up, seeded with ``seed`` (the model's
    initialisation, the loader's order); its Monitor and the Monitor's diagnosis.

    Args:
        out_dir: where the Monitor writes ``metrics.jsonl`` (None: nowhere).
        graphs: the graphs to train on (default: :func:`loop_graphs`; load them once for many
            runs).
    """
    graphs = loop_graphs() if graphs is None else graphs
    set_seed(seed)
    model = case.model(graphs[0].num_features)
    loader = DataLoader(graphs, batch_size=8, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    setup = LoopSetup(model=model, graphs=graphs, loader=loader, loss_fn=rank_loss,
                      epochs=case.epochs, out_dir=Path(out_dir) if out_dir is not None else None)
    monitor = case.loop(setup)
    return monitor, monitor.diagnose()


@dataclass(frozen=True)
class LoopResult:
    """What the Monitor's diagnosis said about one loop on one seed."""

    case: LoopCase
    seed: int
    verdict: str
    named: list[str]
    evidence: str
    """The expected cause's evidence (a fault's), else the first cause's ("" for none)."""
    passed: bool
    """The runbook's verdict on the records (``monitor.verdict().passed``)."""
    seconds: float

    @property
    def ok(self) -> bool:
        """A fault named among the first two causes with every one of its words; a healthy
        loop with no cause and an acceptable verdict."""
        if self.case.expect is None:
            return not self.named and self.verdict in self.case.status
        return (self.case.expect in self.named[:2]
                and all(w in self.evidence for w in self.case.words))


def run_loop_zoo(seeds: Sequence[int] = (0, 1), *,
                 on_result: Callable[[LoopResult], None] | None = None) -> list[LoopResult]:
    """Every loop of the zoo on every seed, faults first."""
    graphs = loop_graphs()
    out = []
    for case in (*LOOP_FAULTS, *HEALTHY_LOOPS):
        for seed in seeds:
            t0 = time.perf_counter()
            monitor, report = run_loop(case, seed, graphs=graphs)
            monitor.close()
            cause = next((c for c in report.causes if c.id == case.expect),
                         report.causes[0] if report.causes else None)
            result = LoopResult(case, seed, report.verdict, [c.id for c in report.causes],
                                cause.evidence if cause else "", monitor.verdict().passed,
                                time.perf_counter() - t0)
            out.append(result)
            if on_result is not None:
                on_result(result)
    return out


def loop_markdown(results: Sequence[LoopResult]) -> str:
    """The table (one row per loop, its seeds' verdicts and causes side by side), then each
    fault's evidence on its first seed."""
    rows = ["| loop | bug (source) | expected | seeds | verdict | causes named (first two) "
            "| runbook verdict | right |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    by_case: dict[str, list[LoopResult]] = {}
    for r in results:
        by_case.setdefault(r.case.name, []).append(r)
    for name, rs in by_case.items():
        case = rs[0].case
        seeds = ", ".join(str(r.seed) for r in rs)
        verdicts = ", ".join(sorted({r.verdict for r in rs}))
        named = "; ".join(", ".join(f"`{c}`" for c in r.named[:2]) or "none" for r in rs)
        passed = ", ".join("PASS" if r.passed else "FAIL" for r in rs)
        right = f"{sum(r.ok for r in rs)}/{len(rs)}"
        expect = f"`{case.expect}`" if case.expect else "no cause"
        rows.append(f"| `{name}` | {case.source} | {expect} | {seeds} | {verdicts} | {named} "
                    f"| {passed} | {right} |")
    rows += ["", "The evidence each fault's cause gave (the first seed):", ""]
    for name, rs in by_case.items():
        if rs[0].case.expect is not None:
            rows.append(f"- `{name}` ({rs[0].case.expect}): {rs[0].evidence or 'not named'}")
    total = sum(r.ok for r in results)
    seconds = sum(r.seconds for r in results)
    rows.append("")
    rows.append(f"{total} of {len(results)} runs right; {seconds:.0f} s in all (one thread).")
    return "\n".join(rows)


def write_loop_page(path: str | Path, results: Sequence[LoopResult], *,
                    command: str = "") -> None:
    """Write :func:`loop_markdown` into ``path`` between its markers."""
    write_marked(path, _START, _END, loop_markdown(results), command=command)
