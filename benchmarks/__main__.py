"""``python -m benchmarks [--quick] [--only loss,metrics] [--out DIR]``.

Full mode writes docs/benchmarks.json and docs/benchmarks.md (or ``--out``); quick mode (CI)
writes only where ``--out`` says. With ``--only``, the sections run replace theirs in the report
already there (of the same mode) and the others stay, each naming the run it came from; without
it the report is replaced. Exit status: 0 when every target holds, 1 when one is missed, 2 on
bad usage (an unknown section, an existing report that cannot be merged into).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time
from pathlib import Path

from benchmarks.common import REPO_ROOT, Options, Section, machine_info, reference_seconds
from benchmarks.report import (
    ReportError,
    console_summary,
    merge_reports,
    read_report,
    to_json,
    write_reports,
)

SECTIONS = ("loss", "metrics", "training", "monitor", "data", "scaling", "suite", "doctor")
"""Benchmark modules in the order they run (cheap and CI-relevant first)."""

logger = logging.getLogger("benchmarks")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="CI mode: smaller sizes, the same targets (about a minute)")
    p.add_argument("--only", default="", help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--out", default=None,
                   help="folder for benchmarks.json + benchmarks.md (default: docs/ in full mode, "
                        "none in quick mode)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads for timed code (default 1: stable on a shared machine)")
    p.add_argument("--device", default="cpu",
                   help="device of the training-loop benchmark: cpu (default), cuda or auto")
    p.add_argument("--workdir", default="/tmp/gatrank-bench", help="scratch folder")
    p.add_argument("-v", "--verbose", action="store_true", help="log each measurement")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(message)s", stream=sys.stderr)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(SECTIONS)
    unknown = sorted(set(names) - set(SECTIONS))
    if unknown:
        p.error(f"unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}")
    out = args.out if args.out is not None else (None if args.quick else str(REPO_ROOT / "docs"))
    previous = None
    if out and args.only:
        try:  # before an hour of measuring, not after
            previous = read_report(Path(out) / "benchmarks.json")
        except ReportError as e:
            p.error(str(e))
    opts = Options(quick=args.quick, threads=args.threads, device=args.device,
                   workdir=Path(args.workdir))
    opts.workdir.mkdir(parents=True, exist_ok=True)
    machine = machine_info(opts)
    if out:  # only the written page shows it: a quick run that writes nothing skips its ~2 s
        machine["reference_s"] = round(reference_seconds(), 3)
    t0 = time.perf_counter()
    sections: list[Section] = []
    for name in names:
        t = time.perf_counter()
        print(f"[{name}] running ...", file=sys.stderr, flush=True)
        sec = importlib.import_module(f"benchmarks.{name}").run(opts)
        sec.seconds = round(time.perf_counter() - t, 1)
        sections.append(sec)
        print(console_summary([sec]) + f"\n[{name}] {sec.seconds:.0f} s", file=sys.stderr,
              flush=True)
    if out:  # the machine's speed again at the end: on a shared VM it drifts within a run
        # (0.38 s at the start of one run, 0.47-0.65 s in the hour before and after it)
        machine["reference_end_s"] = round(reference_seconds(), 3)
    command = "python -m benchmarks" + (" --quick" if args.quick else "") + (
        f" --only {args.only}" if args.only else "")
    report = to_json(sections, machine, quick=args.quick, command=command,
                     seconds=time.perf_counter() - t0)
    print("\n" + console_summary(sections))
    if out:
        json_path, md_path = write_reports(merge_reports(previous, report, SECTIONS), out)
        print(f"wrote {json_path} and {md_path}")
    missed = [c.name for s in sections for c in s.checks if not c.passed]
    print(f"{'all targets met' if not missed else f'{len(missed)} target(s) missed'} "
          f"in {report['seconds']:.0f} s")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
