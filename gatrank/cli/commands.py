"""The other commands: eval, check-data, datasets, suite, notebooks, doctor, verdict."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from gatrank.cli.common import EXIT_PROBLEMS
from gatrank.cli.train import model_kwargs as _model_kwargs

__all__ = ["cmd_eval", "cmd_check_data", "cmd_datasets", "cmd_suite", "cmd_notebooks",
           "cmd_doctor", "cmd_verdict"]


def cmd_eval(args: argparse.Namespace) -> int:
    from gatrank.evaluate import evaluate_checkpoint

    res = evaluate_checkpoint(
        args.checkpoint,
        args.manifest or None,
        dataset=args.dataset or None,
        split=args.split,
        model=args.model,
        model_kwargs=_model_kwargs(args, need_model=False) if args.model_kwargs else None,
        out_dir=args.out or None,
        k=args.k,
        baselines=not args.no_baselines,
        device=args.device,
    )
    print(f"split: {res.split} ({len(res.predictions)} graphs)")
    print(res.table().to_string(float_format=lambda v: f"{v:.4f}"))
    if res.intervals:
        level = next(iter(next(iter(res.intervals.values())).values()))["level"]
        print(f"\nwith {level:.0%} bootstrap intervals over the split's graphs:")
        print(res.interval_table().to_string())
    _print_baselines(res.baseline_fits, res.margins)
    if res.grouped and res.grouped["mean"]:
        print(f"\nmean over {len(res.grouped['per_group'])} groups:")
        print(json.dumps(res.grouped["mean"], indent=2))
    if args.out:
        print(f"wrote {args.out}/predictions.csv, metrics.json, scatter.html")
    return 0


def _print_baselines(fits: dict[str, dict[str, Any]], margins: dict[str, dict[str, Any]]
                     ) -> None:
    """The model against each fitted baseline, one line each (or why one was skipped)."""
    from gatrank.checks.margins import margin_sentence

    for name, fit in fits.items():
        if fit.get("skipped"):
            print(f"{name} baseline skipped: {fit['skipped']}")
        elif name in margins:
            print(f"the model {margin_sentence(name, margins[name])}")


def cmd_check_data(args: argparse.Namespace) -> int:
    from gatrank.config import DataConfig
    from gatrank.datasets import check_data
    from gatrank.io import write_json

    report = check_data(DataConfig(manifest=args.manifest, dataset=args.dataset,
                                   allow_outside_root=args.allow_outside_root))
    print(report.format_table())
    if args.json:
        write_json(args.json, report.to_dict())
    if report.ok:
        return 0
    bad = sorted({p.line if p.line is not None else p.index for p in report.errors
                  if p.per_graph})
    skippable = report.summary["num_graphs"] > 0 and all(p.per_graph for p in report.errors)
    if args.on_error == "skip" and skippable:
        what = "graph(s) (indices" if args.dataset else "row(s) (lines"
        print(f"\n--on-error skip: training would drop {len(bad)} {what} "
              f"{', '.join(map(str, bad))}) and keep {report.summary['num_graphs']} graphs")
        return 0
    return EXIT_PROBLEMS


def cmd_datasets(args: argparse.Namespace) -> int:
    from gatrank.datasets import list_datasets, write_dataset

    if args.action == "list":
        for d in list_datasets():
            print(f"{d['name']:<18} {str(d.get('size', '')):>6}  {d['description']}")
        return 0
    path = write_dataset(args.name, args.dir, n=args.n, seed=args.seed)
    print(f"wrote {path}")
    return 0


def cmd_suite(args: argparse.Namespace) -> int:
    from gatrank.suite import run_suite

    if not args.debug:  # papermill logs four lines per notebook; the suite prints its own
        logging.getLogger("papermill").setLevel(logging.WARNING)

    if args.model_kwargs:
        _model_kwargs(args)  # checked here, not in every notebook
    overrides = {"config": args.config or None, "model": args.model or None,
                 "model_kwargs": args.model_kwargs or None, "loss": args.loss or None,
                 "seed": args.seed}
    res = run_suite(
        args.manifest or None,
        args.out or None,
        dataset=args.dataset or None,
        notebooks=[n.strip() for n in args.notebooks.split(",") if n.strip()] or None,
        notebooks_dir=args.notebooks_dir or None,
        params_dir=args.params_dir or None,
        parameters=overrides,
        timeout=args.timeout,
        threads=args.threads,
        jobs=args.jobs,
        self_contained=args.self_contained,
        progress=lambda line: print(line, flush=True),
    )
    print(f"suite {res.summary['status']} in {res.duration_s:.1f} s; report: "
          f"{res.out_dir / 'index.html'}")
    return res.exit_code


def cmd_notebooks(args: argparse.Namespace) -> int:
    from gatrank.project import PRESETS, write_notebooks

    written = write_notebooks(args.dir, {k: getattr(args, k) for k in PRESETS}, force=args.force)
    print(f"wrote {len(written)} files to {Path(args.dir).resolve()}; open them: jupyter lab "
          f"{Path(args.dir) / 'notebooks'}; run them all: cd {args.dir} && gatrank suite")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    # deferred like every command's imports: the doctor pulls in torch and PyG, which the
    # other commands (and --help) should not wait for
    from gatrank.config import load_config
    from gatrank.doctor import DoctorOptions, diagnose
    from gatrank.doctor.faults import list_faults
    from gatrank.doctor.zoo import ZooResult, run_zoo, write_zoo_page, zoo_graphs
    from gatrank.io import write_json

    if args.list_faults:
        for f in list_faults():
            code = f" ({f['user_code']})" if f["user_code"] else ""
            print(f"{f['name']:<24} {f['cause']:<24} [{f['where']}] {f['description']}{code}")
        return 0
    opts = DoctorOptions(n=args.n, verify=not args.no_verify)
    if args.zoo_table:
        def show(r: ZooResult) -> None:
            print(f"{r.name:<34} {'ok   ' if r.ok else 'WRONG'} {r.verdict:<18} "
                  f"{', '.join(r.named[:3]) or '-'}  fix: {r.fix}  ({r.seconds:.1f}s)",
                  flush=True)

        results = run_zoo(zoo_graphs(args.zoo_graphs), options=opts, n=args.zoo_graphs,
                          on_result=show)
        write_zoo_page(args.zoo_table, results,
                       command=f"gatrank doctor --zoo-table {args.zoo_table}"
                               + (f" --zoo-graphs {args.zoo_graphs}" if args.zoo_graphs != 128
                                  else ""))
        print(f"wrote the confusion table to {args.zoo_table}")
        loops = _loop_table(args.zoo_table)
        return 0 if all(r.ok for r in results) and all(r.ok for r in loops) else EXIT_PROBLEMS
    config: Any = args.config or None
    if args.model_kwargs:
        config = load_config(config).updated({"model.kwargs": _model_kwargs(args)})
    report = diagnose(manifest=args.manifest or None, dataset=args.dataset or None,
                      config=config,
                      model=args.model or None, loss=args.loss or None,
                      inject=args.inject or None, options=opts, seed=args.seed)
    print(report.format_text())
    if args.json:
        write_json(args.json, report.to_dict())
        print(f"wrote {args.json}")
    if args.write_fix:
        from gatrank.doctor.handover import write_fix

        files = write_fix(report, args.write_fix)
        print(f"wrote the verified fix of {report.verified_fixes[0]['cause']}: "
              + ", ".join(str(f) for f in files) if files else
              f"no fix was verified: nothing written to {args.write_fix}"
              + (" (--no-verify)" if args.no_verify else ""))
    return 0 if report.verdict == "healthy" else EXIT_PROBLEMS


def _loop_table(page: str) -> list:
    """The loop zoo on seeds 0 and 1, its table written into ``page``."""
    from gatrank.loops.table import run_loop_zoo, write_loop_page

    def show(r) -> None:
        print(f"loop {r.case.name:<24} seed {r.seed} {'ok   ' if r.ok else 'WRONG'} "
              f"{r.verdict:<15} {', '.join(r.named[:2]) or '-'}  ({r.seconds:.1f}s)", flush=True)

    loops = run_loop_zoo(on_result=show)
    write_loop_page(page, loops, command=f"gatrank doctor --zoo-table {page}")
    print(f"wrote the loop table to {page}")
    return loops


def cmd_verdict(args: argparse.Namespace) -> int:
    """0 when the run passes the runbook's criteria, 1 when it fails (2, from main, for a
    missing or bad log: the message names the file and the line). A Monitor's run is judged
    with its findings.json, as monitor.verdict() and monitor.diagnose() judge it."""
    from gatrank.checks.verdict import format_verdict
    from gatrank.config import load_config
    from gatrank.doctor import judge_run
    from gatrank.training.findings_file import findings_path
    from gatrank.training.history import read_run

    run = read_run(args.run)
    judged = judge_run(run, config=load_config(args.config) if args.config else None)
    source = run.summary["source"]
    seen = ("" if judged.findings is None else
            f", with what the Monitor saw ({findings_path(source)})")
    print(f"{source}: {len(run.history)} records, last epoch {run.history[-1]['epoch']}{seen}\n"
          f"{format_verdict(judged.verdict)}\n\nthe doctor's reading "
          "(causes suspected; gatrank doctor confirms them):\n"
          f"{judged.reading.format_text()}")
    return 0 if judged.verdict.passed else EXIT_PROBLEMS
