"""``gatrank ...``: parse, run the command, turn every failure into a message and an exit code."""

from __future__ import annotations

import logging
import sys

from gatrank.cli.commands import (
    cmd_check_data,
    cmd_datasets,
    cmd_doctor,
    cmd_eval,
    cmd_notebooks,
    cmd_suite,
    cmd_verdict,
)
from gatrank.cli.common import EXIT_INTERRUPTED, EXIT_PROBLEMS, EXIT_USAGE, other_rank
from gatrank.cli.parser import build_parser
from gatrank.cli.train import cmd_train

__all__ = ["main"]


_COMMANDS = {
    "train": cmd_train,
    "eval": cmd_eval,
    "check-data": cmd_check_data,
    "datasets": cmd_datasets,
    "suite": cmd_suite,
    "notebooks": cmd_notebooks,
    "doctor": cmd_doctor,
    "verdict": cmd_verdict,
}


def _loaded(module: str, name: str) -> type | tuple[()]:
    """``module.name`` if ``module`` is already imported, else ``()`` (matches no exception)."""
    mod = sys.modules.get(module)
    return getattr(mod, name) if mod is not None else ()


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 problems found, 2 bad usage or input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.debug else logging.WARNING if args.quiet else logging.INFO
    if other_rank() and not args.debug:
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
