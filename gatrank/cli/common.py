"""What every command shares: the exit codes, the --resume placeholder, the torchrun rank."""

from __future__ import annotations

import os

__all__ = ["EXIT_PROBLEMS", "EXIT_USAGE", "EXIT_INTERRUPTED", "RESUME_FROM_OUT", "other_rank"]

EXIT_PROBLEMS = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

RESUME_FROM_OUT = "<--out>/last.pt"  # what --resume holds when given without a path


def other_rank() -> bool:
    """A torchrun process other than rank 0: it trains but leaves the talking to rank 0."""
    return os.environ.get("RANK", "0") not in ("", "0")
