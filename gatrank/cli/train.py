"""``gatrank train``: the overfit test or full training, from flags, a config or a checkpoint."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gatrank.cli.common import (
    EXIT_INTERRUPTED,
    EXIT_PROBLEMS,
    RESUME_FROM_OUT,
    other_rank,
)

if TYPE_CHECKING:  # annotations only: at run time these cost yaml and torch (see the commands)
    from gatrank.config import Config
    from gatrank.training import TrainResult

__all__ = ["cmd_train", "model_kwargs"]


# --------------------------------------------------------------------------- the commands
# Each command imports the modules it runs when it runs: `gatrank --help` and usage errors
# answer without importing torch (seconds), and `train` checks its config and flags before
# gatrank.training (torch) is imported, so a typo fails in 0.1 s.


def cmd_train(args: argparse.Namespace) -> int:
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
        overrides["model.kwargs"] = model_kwargs(args)
    if overrides:
        cfg = cfg.updated(overrides)
    if args.overfit_n:
        cfg = overfit_config(cfg, args.overfit_n)
    if args.epochs is not None:
        cfg = cfg.updated({"training.epochs": args.epochs})
    if args.stop_at_verdict and not cfg.training.overfit_n:
        raise ConfigError("--stop-at-verdict ends the overfit test at its verdict: give "
                          "--overfit-n N (the runbook: 32); full training stops on validation "
                          "(training.patience)")
    return cfg


def model_kwargs(args: argparse.Namespace, *, need_model: bool = True) -> dict[str, Any]:
    from gatrank.config import parse_model_kwargs  # eval: the checkpoint may name the model

    return parse_model_kwargs(args.model_kwargs, model=args.model if need_model else None)


def _resume_config(args: argparse.Namespace) -> Config:
    """A resumed run's config; its model, loss and folder fill the flags left empty."""
    from gatrank.config import load_config
    from gatrank.training import checkpoint_config

    if args.resume == RESUME_FROM_OUT:
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
    from gatrank.checks.verdict import stop_at_verdict
    from gatrank.training import distributed, train

    logging.getLogger("gatrank.training").setLevel(
        logging.ERROR if other_rank() and not args.debug
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
            stop_when=stop_at_verdict if args.stop_at_verdict else None,
        )
        return res, distributed.is_main()
    finally:
        distributed.teardown()


def _print_training(args: argparse.Namespace, res: TrainResult) -> None:
    """What the run did: processes, dropped rows, final train metrics, the dropout the overfit
    test switched off, verdict, test scores."""
    from gatrank.checks.margins import margin_sentence
    from gatrank.checks.verdict import evaluate_verdict, format_verdict
    from gatrank.training.dropout import format_dropout_off

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
    stopped_early = s["status"] == "completed" and s.get("stop_reason")
    print(
        f"\n{s['mode']} run {s['status']} after {s['epochs_run']} epochs in "
        f"{s['wall_time_s']:.1f}s "
        + (f"on the first {s['split_sizes']['train']} of {s['num_graphs']} graphs"
           if s["mode"] == "overfit" else
           f"on {s['num_graphs']} graphs (splits {s['split_sizes']})")
    )
    if stopped_early:
        print(f"  {s['stop_reason']}")
    if final:
        print(
            f"train: pairwise accuracy {final['pairwise_accuracy']:.3f}  spearman "
            f"{final['spearman']:.3f}  score std {final['score_std']:.4f}  "
            f"grad norm {final['grad_norm']:.4f}"
        )
    if s["mode"] == "overfit":
        dropout = format_dropout_off(s.get("dropout_off") or [])
        if dropout:  # the model's own dropout, which model.dropout does not reach
            print(dropout)
        print(format_verdict(evaluate_verdict(res.history)))
    if "test" in s:
        t = s["test"]
        print(f"test (best epoch {s['best_epoch']}): spearman {t['spearman']:.3f}  "
              f"pairwise accuracy {t['pairwise_accuracy']:.3f}  kendall {t['kendall']:.3f}")
    for name, b in (s.get("baselines") or {}).items():
        if b.get("skipped"):
            print(f"{name} baseline skipped: {b['skipped']}")
        elif b.get("test"):
            t = b["test"]
            print(f"{name} baseline test: spearman {t['spearman']:.3f}  "
                  f"pairwise accuracy {t['pairwise_accuracy']:.3f}; the model "
                  f"{margin_sentence(name, b['margin'])}")
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

