"""The argument parser of every ``gatrank`` command (argparse only: no torch, no yaml)."""

from __future__ import annotations

import argparse

from gatrank.cli.common import RESUME_FROM_OUT

__all__ = ["build_parser"]


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
    p.add_argument("--stop-at-verdict", action="store_true",
                   help="end the overfit test at the first logged epoch where every pass "
                        "criterion holds (default: the runbook's full 500 epochs)")
    p.add_argument("--epochs", type=int, default=None, help="override training.epochs")
    p.add_argument("--seed", type=int, default=None, help="override training.seed")
    p.add_argument("--device", default=None, help="override training.device (auto, cpu, cuda)")
    p.add_argument("--out", default="",
                   help="write metrics.jsonl, summary.json and checkpoints here")
    p.add_argument("--no-baseline", action="store_true",
                   help="full training: skip the baselines fitted beside the model")
    p.add_argument("--on-error", choices=["raise", "skip"], default=None,
                   help="bad manifest rows: stop and list them (raise) or drop and report (skip)")
    p.add_argument("--allow-outside-root", action="store_true",
                   help="allow graph paths outside the manifest's folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--resume", nargs="?", default="", const=RESUME_FROM_OUT, metavar="LAST_PT",
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
    p.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="notebooks run at once, where they do not need each other's output "
                        "(default: the CPU count, capped by free memory; 1: one after another)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads per notebook kernel (OMP_NUM_THREADS; default: the cores "
                        "shared out among the notebooks running at once)")
    p.add_argument("--self-contained", action="store_true",
                   help="embed plotly.js in every HTML report (one file to mail) instead of one "
                        "plotly.min.js shared by the report folder")
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
    p.add_argument("--no-verify", action="store_true",
                   help="do not re-run the overfit test with each top cause's fix applied")
    p.add_argument("--write-fix", default="", metavar="DIR",
                   help="write the first verified fix into DIR: config.yaml (loadable by "
                        "--config), apply_fix.py for a data or model change, fix.json")
    p.add_argument("--zoo-table", default="", metavar="PAGE",
                   help="run the doctor on every fault (and the healthy default, 3 seeds) and "
                        "the Monitor on every loop of the loop zoo (seeds 0 and 1), and write "
                        "both tables into PAGE, e.g. docs/doctor.md")
    p.add_argument("--zoo-graphs", type=int, default=128,
                   help="--zoo-table: graphs of the embedded data to inject into")
    _add_model_loss(p)
    _add_common(p)


def _add_verdict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verdict", help="judge a run you have (no training): the runbook's "
                                       "verdict and the doctor's reading of its metrics.jsonl")
    p.add_argument("run", metavar="RUN_DIR_OR_METRICS_JSONL", help="a run folder (gatrank train "
                   "--out, Monitor(out_dir=...)) or its metrics.jsonl")
    p.add_argument("--config", default="", help="the run's YAML config, for the doctor "
                   "(default: the Monitor's findings.json beside the log, else summary.json's, "
                   "else gatrank's defaults)")
    _add_common(p)


def build_parser() -> argparse.ArgumentParser:
    """The ``gatrank`` parser: one subcommand per command, in the order ``--help`` lists them."""
    parser = argparse.ArgumentParser(
        prog="gatrank",
        description="Find out why a graph ranking model collapses to constant scores.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_train, _add_eval, _add_check_data, _add_datasets, _add_suite,
                _add_notebooks, _add_doctor, _add_verdict):
        add(sub)
    return parser

