"""``gatrank`` command line: train, eval, check-data, datasets, suite, notebooks, doctor."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: at run time these cost yaml and torch (see the commands)
    from gatrank.config import Config
    from gatrank.training import TrainResult

__all__ = ["main", "build_parser"]

logger = logging.getLogger("gatrank")

EXIT_PROBLEMS = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

_RESUME_FROM_OUT = "<--out>/last.pt"  # what --resume holds when given without a path


# --------------------------------------------------------------------------- the parser


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")


def _add_model_kwargs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-kwargs", default="", metavar="JSON",
                   help="the --model constructor's other arguments as a JSON object, e.g. "
                        "'{\"hidden_channels\": 64}' (config key model.kwargs)")


def _add_model_loss(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="",
                   help="'gat' (default), 'linear', or your own 'package.module:Name' (a class "
                        "or factory; in_channels, out_channels=1, edge_dim filled in) whose "
                        "forward takes the batch, or x, edge_index, edge_attr, batch by name, "
                        "and returns [G] or [G, 1] scores")
    _add_model_kwargs(p)
    p.add_argument("--loss", default="",
                   help="your own loss 'package.module:Name', a callable (scores, targets) "
                        "-> scalar")


def _add_source(p: argparse.ArgumentParser, manifest_help: str) -> None:
    """``--manifest`` and ``--dataset``, exclusive: the data a command reads."""
    src = p.add_mutually_exclusive_group()
    src.add_argument("--manifest", default="", help=manifest_help)
    src.add_argument("--dataset", default="", metavar="SPEC",
                     help="your PyG dataset instead of a manifest: 'package.module:name' (a "
                          "Dataset, a list of Data, or a class/function returning one when "
                          "called with no arguments) or a .pt file of a list of Data or an "
                          "InMemoryDataset's processed file")


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="overfit test (--overfit-n) or full training")
    _add_source(p, "manifest.csv (default: embedded chembl-activity)")
    p.add_argument("--config", default="", help="YAML config; keys it omits keep their defaults")
    p.add_argument("--overfit-n", type=int, default=0,
                   help="runbook overfit test: first N graphs, 500 epochs, lr 5e-3, no dropout")
    p.add_argument("--epochs", type=int, default=None, help="override training.epochs")
    p.add_argument("--seed", type=int, default=None, help="override training.seed")
    p.add_argument("--device", default=None, help="override training.device (auto, cpu, cuda)")
    p.add_argument("--out", default="",
                   help="write metrics.jsonl, summary.json and checkpoints here")
    p.add_argument("--no-baseline", action="store_true",
                   help="full training: skip the linear baseline trained beside the model")
    p.add_argument("--on-error", choices=["raise", "skip"], default=None,
                   help="bad manifest rows: stop and list them (raise) or drop and report (skip)")
    p.add_argument("--allow-outside-root", action="store_true",
                   help="allow graph paths outside the manifest's folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--resume", nargs="?", default="", const=_RESUME_FROM_OUT, metavar="LAST_PT",
                   help="continue an interrupted run from its last.pt (alone: --out's), with "
                        "its config, model and folder unless given; --epochs may extend it")
    _add_model_loss(p)
    _add_common(p)


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="score a checkpoint on a split with baselines beside it")
    p.add_argument("--checkpoint", required=True)
    _add_source(p, "default: the data the checkpoint trained on")
    p.add_argument("--split", default="test", choices=["train", "val", "test", "all"])
    p.add_argument("--k", type=int, default=10, help="k of NDCG@k")
    p.add_argument("--out", default="", help="write predictions.csv, metrics.json, scatter.html")
    p.add_argument("--no-baselines", action="store_true")
    p.add_argument("--model", default="", help="import string of a custom model checkpoint")
    _add_model_kwargs(p)
    p.add_argument("--device", default="", help="auto (CUDA when present), cpu or cuda "
                   "(default: the checkpoint's training.device)")
    _add_common(p)


def _add_check_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check-data", help="validate a manifest (or a dataset) and list every "
                                          "problem")
    _add_source(p, "default: the embedded chembl-activity")
    p.add_argument("--json", default="", help="also write the report as JSON here")
    p.add_argument("--allow-outside-root", action="store_true")
    p.add_argument("--on-error", choices=["raise", "skip"], default="raise",
                   help="skip: pass (exit 0) when training with --on-error skip would drop the "
                        "listed rows and still have graphs left")
    _add_common(p)


def _add_datasets(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("datasets", help="embedded data sets (no network)")
    dsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    d = dsub.add_parser("list", help="list the embedded data sets")
    _add_common(d)
    d = dsub.add_parser("write", help="write NAME's manifest.csv (and graph files) into DIR")
    d.add_argument("name")
    d.add_argument("dir")
    d.add_argument("--n", type=int, default=None, help="number of graphs (default: all)")
    d.add_argument("--seed", type=int, default=0)
    _add_common(d)


def _add_suite(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("suite", help="run the five notebooks headlessly and write a report "
                                     "(executed notebooks, offline HTML, summary.json, index.html)")
    _add_source(p, "manifest.csv (default: embedded chembl-activity)")
    p.add_argument("--out", default="",
                   help="report folder (default: reports/<timestamp>, linked as reports/latest)")
    p.add_argument("--config", default="", help="YAML config passed to every notebook")
    p.add_argument("--seed", type=int, default=None, help="seed passed to every notebook")
    p.add_argument("--notebooks", default="",
                   help="comma-separated subset to run, e.g. 01_data_checks,03_overfit")
    p.add_argument("--notebooks-dir", default="", help="default: the project's (else bundled)")
    p.add_argument("--params-dir", default="", help="default: the params/ beside the notebooks")
    p.add_argument("--timeout", type=int, default=None, help="seconds a single cell may run")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads per notebook kernel (OMP_NUM_THREADS); 1 is often fastest "
                        "on a small or shared machine")
    _add_model_loss(p)
    _add_common(p)


def _add_notebooks(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("notebooks", help="copy the notebooks and params into DIR, preset")
    p.add_argument("dir", metavar="DIR")
    data = p.add_mutually_exclusive_group()
    data.add_argument("--manifest", default="", help="preset manifest.csv")
    data.add_argument("--dataset", default="", help="preset 'package.module:name' or a .pt")
    p.add_argument("--config", default="", help="preset YAML config")
    _add_model_loss(p)
    p.add_argument("--force", action="store_true", help="overwrite files that exist in DIR")
    _add_common(p)


def _add_doctor(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="find out why the model collapses: data and loss checks, "
                                      "an overfit test and ablations; ranked causes with fixes")
    _add_source(p, "manifest.csv (default: embedded chembl-activity)")
    p.add_argument("--config", default="", help="your YAML config (run beside the runbook's)")
    p.add_argument("--json", default="", help="also write the report as JSON here")
    p.add_argument("--inject", default="", metavar="FAULT",
                   help="inject a fault of the zoo first, for demonstration (see --list-faults)")
    p.add_argument("--list-faults", action="store_true", help="list the fault zoo and exit")
    p.add_argument("--seed", type=int, default=None, help="override training.seed")
    p.add_argument("--n", type=int, default=32, help="graphs in the overfit test (runbook: 32)")
    p.add_argument("--zoo-table", default="", metavar="PAGE",
                   help="run the doctor on every fault (and the healthy default, 3 seeds) and "
                        "write the confusion table into PAGE, e.g. docs/doctor.md")
    p.add_argument("--zoo-graphs", type=int, default=128,
                   help="--zoo-table: graphs of the embedded data to inject into")
    _add_model_loss(p)
    _add_common(p)


def build_parser() -> argparse.ArgumentParser:
    """The ``gatrank`` parser: one subcommand per command, in the order ``--help`` lists them."""
    parser = argparse.ArgumentParser(
        prog="gatrank",
        description="Find out why a graph ranking model collapses to constant scores.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_train, _add_eval, _add_check_data, _add_datasets, _add_suite,
                _add_notebooks, _add_doctor):
        add(sub)
    return parser


# --------------------------------------------------------------------------- the commands
# Each command imports the modules it runs when it runs: `gatrank --help` and usage errors
# answer without importing torch (seconds), and `train` checks its config and flags before
# gatrank.training (torch) is imported, so a typo fails in 0.1 s.


def _cmd_train(args: argparse.Namespace) -> int:
    cfg = _train_config(args)
    res, is_main = _run_training(args, cfg)
    if not is_main:  # under torchrun only rank 0 reports
        return 0 if res.summary["status"] == "completed" else EXIT_PROBLEMS
    _print_training(args, res)
    return _train_exit(args, res.summary)


def _train_config(args: argparse.Namespace) -> Config:
    """The run's config: the YAML (or a resumed run's own), then the flags that override it."""
    from gatrank.config import ConfigError, load_config, overfit_config

    if args.overfit_n and args.overfit_n < 2:
        raise ConfigError(
            f"--overfit-n {args.overfit_n} is out of range: allowed 0 (off) or >= 2 "
            "(ranking needs pairs; the runbook uses 32)"
        )
    cfg = _resume_config(args) if args.resume else load_config(args.config or None)
    overrides = {}
    if args.manifest or args.dataset:  # a flag replaces the config's source, whichever it was
        overrides["data.manifest"], overrides["data.dataset"] = args.manifest, args.dataset
    if args.on_error:
        overrides["data.on_error"] = args.on_error
    if args.allow_outside_root:
        overrides["data.allow_outside_root"] = True
    if args.seed is not None:
        overrides["training.seed"] = args.seed
    if args.device:
        overrides["training.device"] = args.device
    if args.model_kwargs:
        overrides["model.kwargs"] = _model_kwargs(args)
    if overrides:
        cfg = cfg.updated(overrides)
    if args.overfit_n:
        cfg = overfit_config(cfg, args.overfit_n)
    if args.epochs is not None:
        cfg = cfg.updated({"training.epochs": args.epochs})
    return cfg


def _model_kwargs(args: argparse.Namespace, *, need_model: bool = True) -> dict[str, Any]:
    from gatrank.config import parse_model_kwargs  # eval: the checkpoint may name the model

    return parse_model_kwargs(args.model_kwargs, model=args.model if need_model else None)


def _resume_config(args: argparse.Namespace) -> Config:
    """A resumed run's config; its model, loss and folder fill the flags left empty."""
    from gatrank.config import load_config
    from gatrank.training import checkpoint_config

    if args.resume == _RESUME_FROM_OUT:
        if not args.out:
            raise FileNotFoundError("--resume without a path resumes --out's last.pt: pass "
                                    "--out RUN_DIR, or --resume RUN_DIR/last.pt")
        args.resume = str(Path(args.out) / "last.pt")
    if not Path(args.resume).is_file():
        raise FileNotFoundError(f"--resume {args.resume}: no such file (pass a run's last.pt)")
    cfg, specs = checkpoint_config(args.resume)
    if args.config:  # the run's data stays the checkpoint's unless a flag says otherwise
        cfg = load_config(args.config, data__manifest=cfg.data.manifest,
                          data__dataset=cfg.data.dataset)
    args.model = args.model or specs["model"]
    args.loss = args.loss or (specs["loss"] if specs["loss"] != "custom" else "")
    args.out = args.out or str(Path(args.resume).parent)
    return cfg


def _run_training(args: argparse.Namespace, cfg: Config) -> tuple[TrainResult, bool]:
    """Train; also whether this process is rank 0 (asked before the process group is left)."""
    from gatrank.training import distributed, train

    logging.getLogger("gatrank.training").setLevel(
        logging.ERROR if _other_rank() and not args.debug
        else logging.INFO if cfg.training.enable_debug_logs and not args.quiet else logging.WARNING
    )
    try:
        res = train(
            cfg,
            model=args.model or None,
            loss=args.loss or None,
            out_dir=args.out or None,
            progress=not args.no_progress,
            with_baseline=not args.no_baseline,
            resume=args.resume or None,
        )
        return res, distributed.is_main()
    finally:
        distributed.teardown()


def _print_training(args: argparse.Namespace, res: TrainResult) -> None:
    """What the run did: processes, dropped rows, final train metrics, verdict, test scores."""
    from gatrank.checks.verdict import evaluate_verdict, format_verdict

    s = res.summary
    if s.get("distributed"):
        d = s["distributed"]
        print(f"distributed: {d['world_size']} processes ({d['backend']}), "
              f"{d['batch_size_per_process']} graphs per process and step")
    if s.get("dropped_rows"):
        what = "graph(s)" if s["config"]["data"].get("dataset") else "manifest row(s)"
        print(f"\ndropped {s['num_dropped_rows']} {what} with problems (--on-error skip):")
        for p in s["dropped_rows"]:
            where = f"line {p['line']}" if p.get("index") is None else f"index {p['index']}"
            print(f"  {where}  id {p['id']}  {p['file']}: {p['problem']} [{p['code']}]")
    final = s["final"]
    print(
        f"\n{s['mode']} run {s['status']} after {s['epochs_run']} epochs in "
        f"{s['wall_time_s']:.1f}s "
        + (f"on the first {s['split_sizes']['train']} of {s['num_graphs']} graphs"
           if s["mode"] == "overfit" else
           f"on {s['num_graphs']} graphs (splits {s['split_sizes']})")
    )
    if final:
        print(
            f"train: pairwise accuracy {final['pairwise_accuracy']:.3f}  spearman "
            f"{final['spearman']:.3f}  score std {final['score_std']:.4f}  "
            f"grad norm {final['grad_norm']:.4f}"
        )
    if s["mode"] == "overfit":
        print(format_verdict(evaluate_verdict(res.history)))
    if "test" in s:
        t = s["test"]
        print(f"test (best epoch {s['best_epoch']}): spearman {t['spearman']:.3f}  "
              f"pairwise accuracy {t['pairwise_accuracy']:.3f}  kendall {t['kendall']:.3f}")
    if "baseline" in s and s["baseline"]["test"]:
        t = s["baseline"]["test"]
        print(f"linear baseline test: spearman {t['spearman']:.3f}  "
              f"pairwise accuracy {t['pairwise_accuracy']:.3f}")
    if args.out:
        print(f"wrote {args.out}/metrics.jsonl, summary.json, best.pt, last.pt")


def _train_exit(args: argparse.Namespace, s: dict[str, Any]) -> int:
    """0 completed, 130 interrupted (saying how to continue), 1 otherwise."""
    if s["status"] == "interrupted":
        print(f"{s['stop_reason']}.", file=sys.stderr)
        if args.out:
            launcher = (f"torchrun --nproc-per-node {s['distributed']['world_size']} -m "
                        if s.get("distributed") else "")
            print(f"continue with: {launcher}gatrank train --resume "
                  f"{Path(args.out) / 'last.pt'}", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0 if s["status"] == "completed" else EXIT_PROBLEMS


def _cmd_eval(args: argparse.Namespace) -> int:
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
    if res.grouped and res.grouped["mean"]:
        print(f"\nmean over {len(res.grouped['per_group'])} groups:")
        print(json.dumps(res.grouped["mean"], indent=2))
    if args.out:
        print(f"wrote {args.out}/predictions.csv, metrics.json, scatter.html")
    return 0


def _cmd_check_data(args: argparse.Namespace) -> int:
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


def _cmd_datasets(args: argparse.Namespace) -> int:
    from gatrank.datasets import list_datasets, write_dataset

    if args.action == "list":
        for d in list_datasets():
            print(f"{d['name']:<18} {str(d.get('size', '')):>6}  {d['description']}")
        return 0
    path = write_dataset(args.name, args.dir, n=args.n, seed=args.seed)
    print(f"wrote {path}")
    return 0


def _cmd_suite(args: argparse.Namespace) -> int:
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
        progress=lambda line: print(line, flush=True),
    )
    print(f"suite {res.summary['status']} in {res.duration_s:.1f} s; report: "
          f"{res.out_dir / 'index.html'}")
    return res.exit_code


def _cmd_notebooks(args: argparse.Namespace) -> int:
    from gatrank.project import PRESETS, write_notebooks

    written = write_notebooks(args.dir, {k: getattr(args, k) for k in PRESETS}, force=args.force)
    print(f"wrote {len(written)} files to {Path(args.dir).resolve()}; open them: jupyter lab "
          f"{Path(args.dir) / 'notebooks'}; run them all: cd {args.dir} && gatrank suite")
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    # deferred like every command's imports: the doctor pulls in torch and PyG, which the
    # other commands (and --help) should not wait for
    from gatrank.config import load_config
    from gatrank.doctor import DoctorOptions, diagnose
    from gatrank.doctor.faults import list_faults
    from gatrank.doctor.zoo import ZooResult, run_zoo, write_zoo_page, zoo_graphs
    from gatrank.io import write_json

    if args.list_faults:
        for f in list_faults():
            print(f"{f['name']:<24} {f['cause']:<24} [{f['where']}] {f['description']}")
        return 0
    opts = DoctorOptions(n=args.n)
    if args.zoo_table:
        def show(r: ZooResult) -> None:
            print(f"{r.name:<24} {'ok   ' if r.ok else 'WRONG'} {r.verdict:<18} "
                  f"{', '.join(r.named[:3]) or '-'}  ({r.seconds:.1f}s)", flush=True)

        results = run_zoo(zoo_graphs(args.zoo_graphs), options=opts, on_result=show)
        write_zoo_page(args.zoo_table, results,
                       command=f"gatrank doctor --zoo-table {args.zoo_table}"
                               + (f" --zoo-graphs {args.zoo_graphs}" if args.zoo_graphs != 128
                                  else ""))
        print(f"wrote the confusion table to {args.zoo_table}")
        return 0 if all(r.ok for r in results) else EXIT_PROBLEMS
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
    return 0 if report.verdict == "healthy" else EXIT_PROBLEMS


_COMMANDS = {
    "train": _cmd_train,
    "eval": _cmd_eval,
    "check-data": _cmd_check_data,
    "datasets": _cmd_datasets,
    "suite": _cmd_suite,
    "notebooks": _cmd_notebooks,
    "doctor": _cmd_doctor,
}


def _loaded(module: str, name: str) -> type | tuple[()]:
    """``module.name`` if ``module`` is already imported, else ``()`` (matches no exception)."""
    mod = sys.modules.get(module)
    return getattr(mod, name) if mod is not None else ()


def _other_rank() -> bool:
    """A torchrun process other than rank 0: it trains but leaves the talking to rank 0."""
    return os.environ.get("RANK", "0") not in ("", "0")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 problems found, 2 bad usage or input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.debug else logging.WARNING if args.quiet else logging.INFO
    if _other_rank() and not args.debug:
        level = logging.ERROR  # torchrun's other ranks: rank 0 speaks for the run
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
    try:
        return _COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the CLI turns every failure into a message
        if args.debug:
            raise
        # classes of modules not imported yet cannot have raised (and importing them costs torch)
        ConfigError = _loaded("gatrank.config", "ConfigError")  # noqa: N806
        DataError = _loaded("gatrank.data", "DataError")  # noqa: N806
        UnsafeFileError = _loaded("gatrank.data", "UnsafeFileError")  # noqa: N806
        NonFiniteError = _loaded("gatrank.training", "NonFiniteError")  # noqa: N806
        ScoreShapeError = _loaded("gatrank.model", "ScoreShapeError")  # noqa: N806
        kind = (
            "data problems" if isinstance(exc, DataError)
            else "config error" if isinstance(exc, ConfigError)
            else "unsafe file refused" if isinstance(exc, UnsafeFileError)
            else "training stopped" if isinstance(exc, NonFiniteError)
            else "scores are not one per graph" if isinstance(exc, ScoreShapeError)
            else type(exc).__name__
        )
        print(f"gatrank {args.command}: {kind}:\n{exc}", file=sys.stderr)
        if args.command == "train" and isinstance(exc, DataError) and any(
            p.per_graph for p in exc.problems
        ):
            print("to drop the bad rows and train on the rest: --on-error skip", file=sys.stderr)
        print("(run with --debug for the traceback)", file=sys.stderr)
        found = isinstance(exc, (DataError, NonFiniteError, UnsafeFileError, ScoreShapeError))
        return EXIT_PROBLEMS if found else EXIT_USAGE
