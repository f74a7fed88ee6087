"""``findings.json``: what a :class:`gatrank.Monitor` saw in a user's loop besides its records,
written beside ``metrics.jsonl`` so that a run read back from its folder (``gatrank verdict``,
the notebooks' ``metrics`` parameter) is judged as ``monitor.verdict()`` and
``monitor.diagnose()`` judge it.

.. code-block:: json

    {"format": 1,
     "graphs_per_epoch": 32,
     "config": {"training.learning_rate": 0.005, "training.weight_decay": 0.0},
     "findings": {"frozen": {...}, "unused": [...], "numel": {...},
                  "nonfinite": [{"epoch": 3, "step": 1, "loss": NaN}],
                  "nonfinite_count": 1, "loop": {...}}}

- ``graphs_per_epoch``: the graphs one epoch trained on (an int), or null where not known;
  it decides whether the run is judged as an overfit test or as training.
- ``config``: dotted keys for ``Config().updated(...)`` (the loop's learning rate and weight
  decay), possibly empty.
- ``findings``: the object :func:`gatrank.doctor.diagnose_history` reads as ``findings``; opaque
  here except ``nonfinite``, whose entries read back as
  :class:`~gatrank.training.monitor.NonFiniteStep` (the doctor names the first one as its
  ``str`` gives it).

Values are written as Python's :mod:`json` writes them, NumPy and torch numbers as Python
numbers, a dataclass (a ``NonFiniteStep``) as its fields. A non-finite float stays a float
(JSON's ``NaN``, ``Infinity``, ``-Infinity`` tokens, as in ``metrics.jsonl`` and
``summary.json``): the doctor compares the findings' numbers (a NaN loss, a NaN gradient norm
of the loop's mechanics), and a string or null in their place would change what it reads. This
module is the file's only reader and writer.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gatrank.config import Config, ConfigError
from gatrank.io import atomic_write_text
from gatrank.training.monitor import NonFiniteStep

__all__ = ["FORMAT", "FINDINGS_FILE", "RunFindings", "findings_path", "write_findings",
           "read_findings", "remove_findings"]

FORMAT = 1
"""The format this version writes and reads; a file of a later one is refused, by name."""

FINDINGS_FILE = "findings.json"
"""Its name, beside ``metrics.jsonl``."""

_NONFINITE_KEYS = ("epoch", "step", "loss")


@dataclass(frozen=True)
class RunFindings:
    """A ``findings.json`` read back: what ``monitor.verdict()`` and ``monitor.diagnose()``
    pass besides the records."""

    graphs_per_epoch: int | None
    """The graphs one epoch trained on (None: not known, judged as an overfit test)."""
    config: Config
    """gatrank's defaults with the file's ``config`` keys applied."""
    findings: dict[str, Any]
    """For ``diagnose_history(findings=...)``; ``nonfinite`` holds
    :class:`~gatrank.training.monitor.NonFiniteStep` objects."""


def findings_path(path: str | Path) -> Path:
    """The ``findings.json`` of a run: ``path/findings.json`` for a run folder, the one beside
    the file otherwise (``metrics.jsonl``, or ``findings.json`` itself)."""
    path = Path(path).expanduser()
    return (path if path.is_dir() else path.parent) / FINDINGS_FILE


def write_findings(out_dir: str | Path, *, graphs_per_epoch: int | None,
                   config: Mapping[str, Any], findings: Mapping[str, Any]) -> Path:
    """Write ``out_dir/findings.json`` atomically (a reader sees the previous file or this one);
    returns its path.

    Args:
        graphs_per_epoch: the graphs one epoch trains on, or None where not known.
        config: dotted config keys (``{"training.learning_rate": 5e-3}``); ``{}`` for none.
        findings: what the Monitor saw (:meth:`gatrank.Monitor.findings`): JSON values,
            NumPy/torch numbers, dataclasses, tuples (read back as lists).

    Raises:
        ValueError: ``graphs_per_epoch`` not a positive int, or a ``config`` key that
            ``Config().updated`` refuses.
        TypeError: a value in ``findings`` that has no JSON form (named by its place).
    """
    path = Path(out_dir) / FINDINGS_FILE
    _check_graphs(graphs_per_epoch, "graphs_per_epoch")
    config = _jsonable(dict(config), "config")
    _config(config, "config")
    doc = {"format": FORMAT, "graphs_per_epoch": graphs_per_epoch, "config": config,
           "findings": _jsonable(dict(findings), "findings")}
    atomic_write_text(path, json.dumps(doc, indent=2) + "\n")
    return path


def remove_findings(out_dir: str | Path) -> None:
    """Remove ``out_dir/findings.json`` if there is one: a run that starts a new
    ``metrics.jsonl`` there must not be read with findings another run left."""
    (Path(out_dir) / FINDINGS_FILE).unlink(missing_ok=True)


def read_findings(path: str | Path) -> RunFindings | None:
    """The ``findings.json`` of a run (a run folder or its ``metrics.jsonl``, see
    :func:`findings_path`); None when there is none (a ``gatrank train`` run, an older
    Monitor's).

    Raises:
        ValueError: naming the file and what is wrong: not JSON, not an object, a format this
            version does not read, a field of the wrong type, a config key gatrank does not
            have.
    """
    file = findings_path(path)
    if not file.is_file():
        return None
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{file}: not valid JSON ({exc.msg}, line {exc.lineno}, column "
                         f"{exc.colno})") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{file}: not UTF-8 text ({exc.reason})") from None
    try:
        return _parse(doc)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{file}: {exc}") from None


def _parse(doc: Any) -> RunFindings:
    if not isinstance(doc, dict):
        raise ValueError(f"a JSON {type(doc).__name__}, not an object {{\"format\": {FORMAT}, "
                         "...}")
    fmt = doc.get("format")
    if isinstance(fmt, bool) or not isinstance(fmt, int):
        raise ValueError(f"format = {fmt!r}: expected the integer {FORMAT}")
    if fmt > FORMAT:
        raise ValueError(f"format {fmt} was written by a newer gatrank (this one reads format "
                         f"{FORMAT}): upgrade gatrank")
    if fmt != FORMAT:
        raise ValueError(f"format {fmt} is not one gatrank wrote (expected {FORMAT})")
    missing = [k for k in ("graphs_per_epoch", "config", "findings") if k not in doc]
    if missing:
        raise ValueError(f"no {', '.join(map(repr, missing))}")
    _check_graphs(doc["graphs_per_epoch"], "graphs_per_epoch")
    findings = doc["findings"]
    if not isinstance(findings, dict):
        raise ValueError(f"findings is a JSON {type(findings).__name__}, not an object")
    if "nonfinite" in findings:
        findings = {**findings, "nonfinite": _nonfinite_steps(findings["nonfinite"])}
    return RunFindings(graphs_per_epoch=doc["graphs_per_epoch"],
                       config=_config(doc["config"], "config"), findings=findings)


def _check_graphs(value: Any, where: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                              or value < 1):
        raise ValueError(f"{where} = {value!r}: expected a positive integer (the graphs one "
                         "epoch trains on) or null")


def _config(raw: Any, where: str) -> Config:
    if not isinstance(raw, dict):
        raise ValueError(f"{where} is a {type(raw).__name__}, not an object of dotted keys "
                         "({\"training.learning_rate\": 0.005})")
    try:
        return Config().updated(raw)
    except ConfigError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _nonfinite_steps(raw: Any) -> list[NonFiniteStep]:
    """The ``nonfinite`` entries (``{"epoch", "step", "loss"}``) as the Monitor held them."""
    if not isinstance(raw, list):
        raise ValueError(f"findings.nonfinite is a {type(raw).__name__}, not a list")
    steps = []
    for i, entry in enumerate(raw):
        where = f"findings.nonfinite[{i}]"
        if not isinstance(entry, dict) or any(k not in entry for k in _NONFINITE_KEYS):
            raise ValueError(f"{where} = {entry!r}: expected an object with "
                             f"{', '.join(_NONFINITE_KEYS)}")
        epoch, step, loss = (entry[k] for k in _NONFINITE_KEYS)
        if any(isinstance(v, bool) or not isinstance(v, int) for v in (epoch, step)):
            raise ValueError(f"{where}: epoch and step must be integers, not {epoch!r} and "
                             f"{step!r}")
        if isinstance(loss, bool) or not isinstance(loss, (int, float)):
            raise ValueError(f"{where}.loss = {loss!r}: expected a number (NaN, Infinity)")
        steps.append(NonFiniteStep(epoch=epoch, step=step, loss=float(loss)))
    return steps


def _jsonable(obj: Any, where: str) -> Any:
    """``obj`` as strict JSON values; ``where`` names its place in an error."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj)
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v, f"{where}.{k}") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable({f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}, where)
    if isinstance(obj, Path):
        return str(obj)
    if callable(getattr(obj, "tolist", None)):  # NumPy and torch numbers and arrays
        return _jsonable(obj.tolist(), where)
    raise TypeError(f"{where}: a value of type {type(obj).__name__} has no JSON form; pass "
                    "numbers, strings, lists and dicts")
