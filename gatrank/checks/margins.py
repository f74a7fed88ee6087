"""One sentence on the model against a baseline, from a paired bootstrap of their Spearman
(:func:`gatrank.metrics.paired_bootstrap`): what the CLI, the doctor, the notebooks and the
suite's index page print. Free of torch, so that the suite's process can word it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["margin_sentence"]


def margin_sentence(name: str, m: Mapping[str, Any]) -> str:
    """One line on the model against baseline ``name`` (a :func:`gatrank.metrics.
    paired_bootstrap` result): beats it, loses to it, or no difference beyond the noise."""
    span = (f"Spearman {m['difference']:+.3f}, {m['level']:.0%} interval "
            f"{m['low']:+.3f} to {m['high']:+.3f}, {m['n']} graphs")
    if m["better"]:
        return f"beats the {name} baseline by more than the noise ({span})"
    if m["worse"]:
        return f"loses to the {name} baseline by more than the noise ({span})"
    return f"shows no difference from the {name} baseline beyond the noise ({span})"
