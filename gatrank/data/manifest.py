"""Reading a manifest table and collecting every table-level problem (not the graph files)."""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from gatrank.data.graph_files import _GRAPH_SUFFIXES
from gatrank.data.problems import DataError, DataProblem

logger = logging.getLogger(__name__)

__all__ = ["read_manifest", "SPLITS"]

SPLITS = ("train", "val", "test")
_SPLIT_SYNONYMS = {"training": "train", "valid": "val", "validation": "val", "dev": "val",
                   "testing": "test", "holdout": "test"}
_NAN_WORDS = {"nan", "na", "n/a", "null", "none"}
_COLUMNS = ("id", "y", "path", "smiles", "split", "group")


def _sniff_delimiter(first_line: str) -> str:
    counts = {d: first_line.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] > 0 else ","


def _outside_root(raw: str) -> bool:
    """An absolute path (POSIX, a Windows drive or UNC share) or one that climbs out with
    ``..``. String operations only: this runs once per manifest row, and four ``PurePath``
    objects a row took 70% of parsing a 10,000-row manifest (``pathlib``'s own reading of the
    same rules is the test's oracle)."""
    if raw.startswith(("/", "\\")) or (raw[1:2] == ":" and raw[:1].isalpha()):
        return True
    norm = os.path.normpath(raw.replace("\\", "/"))
    return norm == ".." or norm.startswith("../")


def _suffix(path: str) -> str:
    """``PurePosixPath(path).suffix`` (with ``\\`` read as ``/``), lower-cased."""
    parts = [p for p in path.replace("\\", "/").split("/") if p and p != "."]
    name = parts[-1] if parts else ""
    dot = name.rfind(".")
    return name[dot:].lower() if 0 < dot < len(name) - 1 else ""


@dataclass
class _Parsed:
    """Internal result of reading a manifest: the table plus every table-level problem."""

    manifest: Path
    table: pd.DataFrame | None
    problems: list[DataProblem]
    fatal: bool  # a manifest-level problem: no rows can be used


def _parse_manifest(path: str | Path, allow_outside_root: bool) -> _Parsed:
    """Read the table and check it: the columns first, then every row, then ids and groups."""
    manifest = Path(path)
    mfile = str(manifest)
    text = _read_text(manifest)
    if isinstance(text, DataProblem):
        return _Parsed(manifest, None, [text], True)
    header, records = _read_records(text)
    problems = _column_problems(header, records, mfile)
    if problems:
        return _Parsed(manifest, None, problems, True)
    col = {c: header.index(c) for c in _COLUMNS if c in header}
    rows: list[dict[str, Any]] = []
    for pos, (line, rec) in enumerate(records):
        row, found = _check_row(pos, line, rec, len(header), col, allow_outside_root)
        rows.append(row)
        problems += [DataProblem(line, row["id"], mfile, *f) for f in found]
    problems += _duplicate_ids(rows, mfile) + _singleton_groups(rows, mfile)
    # object dtype keeps None for empty cells (pandas' string dtype would turn them into NaN)
    table = pd.DataFrame(rows, columns=["id", "y", "split", "group", "smiles", "path", "line"],
                         dtype=object)
    problems.sort(key=lambda p: (p.line or 0))
    return _Parsed(manifest, table.astype({"y": "float64", "line": "int64"}), problems, False)


def _read_text(manifest: Path) -> str | DataProblem:
    """The manifest's text, or the manifest-level problem that stops it being read."""
    def fatal(problem: str, fix: str, code: str) -> DataProblem:
        return DataProblem(None, None, str(manifest), problem, fix, code)

    if not manifest.is_file():
        return fatal(f"manifest {manifest} does not exist or is not a file",
                     "pass the path of your manifest.csv", "manifest_not_found")
    try:
        text = manifest.read_bytes().decode("utf-8-sig")  # -sig strips a UTF-8 BOM
    except UnicodeDecodeError as exc:
        return fatal(f"manifest is not UTF-8 text ({exc.reason} at byte {exc.start})",
                     "save it as UTF-8 (in Excel: 'CSV UTF-8')", "unreadable_manifest")
    if not text.strip():
        return fatal("manifest is empty", "write a header (y, and path or smiles) and one row "
                     "per graph", "empty_manifest")
    return text


def _read_records(text: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header (stripped, lower case) and ``(line, fields)`` of every non-blank record.

    ``line`` is where the record starts (header = 1), so a quoted field spanning lines does not
    shift the line numbers of the rows after it.
    """
    first = next(ln for ln in text.splitlines() if ln.strip())
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_sniff_delimiter(first))
    header: list[str] | None = None
    records: list[tuple[int, list[str]]] = []
    prev_end = 0
    for rec in reader:
        start, prev_end = prev_end + 1, reader.line_num
        if not any(c.strip() for c in rec):
            continue
        if header is None:
            header = [c.strip().lower() for c in rec]
        else:
            records.append((start, rec))
    assert header is not None  # the text has a non-blank line
    return header, records


def _column_problems(header: list[str], records: list[tuple[int, list[str]]],
                     mfile: str) -> list[DataProblem]:
    """Manifest-level problems of the header and row count: any of them means no usable row."""
    problems: list[DataProblem] = []
    dup = sorted(c for c, k in Counter(header).items() if k > 1 and c)
    if dup:
        problems.append(DataProblem(None, None, mfile, f"duplicate column(s) {dup} in the header",
                                    "keep one column of each name", "duplicate_column"))
    if "y" not in header:
        problems.append(DataProblem(
            None, None, mfile, f"no 'y' column (columns found: {', '.join(header)})",
            "add a 'y' column with the numeric target (larger = should rank higher), or rename "
            "your target column to 'y'", "missing_y_column"))
    if "path" not in header and "smiles" not in header:
        problems.append(DataProblem(
            None, None, mfile, f"no graph source column (columns found: {', '.join(header)})",
            "add a 'path' column (graph files relative to the manifest) or a 'smiles' column",
            "missing_source_column"))
    if not records:
        problems.append(DataProblem(None, None, mfile, "manifest has a header but no data rows",
                                    "add one row per graph", "empty_manifest"))
    return problems


# A row check's finding: (problem, fix, code), turned into a DataProblem with the row's line/id.
_Found = tuple[str, str, str]


def _check_row(pos: int, line: int, rec: list[str], width: int, col: dict[str, int],
               allow_outside_root: bool) -> tuple[dict[str, Any], list[_Found]]:
    """One data row as a table row (``y`` NaN unless it parses), and what is wrong with it."""
    def get(name: str) -> str | None:
        v = rec[col[name]].strip() if name in col and col[name] < len(rec) else ""
        return v or None

    row = {"id": get("id") or str(pos), "y": math.nan, "split": get("split"),
           "group": get("group"), "smiles": get("smiles"), "path": get("path"), "line": line}
    if len(rec) != width:
        return row, [(f"row has {len(rec)} fields but the header has {width}",
                      "quote fields that contain the delimiter, and give every row one field per "
                      "column", "wrong_field_count")]
    found: list[_Found] = []
    row["y"] = _check_target(get("y"), found)
    _check_source(row["smiles"], row["path"], allow_outside_root, found)
    if "split" in col:
        row["split"] = _check_split(row["split"], found)
    if "group" in col and row["group"] is None:
        found.append(("group is empty", "fill in the query id this graph belongs to",
                      "missing_group"))
    return row, found


def _check_target(y: str | None, found: list[_Found]) -> float:
    """``y`` as a float (NaN when missing or not a number); its problems go into ``found``."""
    if y is None:
        found.append(("target y is empty", "fill in y, or remove the row", "missing_target"))
        return math.nan
    if y.lower() in _NAN_WORDS:
        found.append((f"target y is NaN ({y!r})", "fill in a measured value, or remove the row",
                      "nan_target"))
        return math.nan
    try:
        value = float(y)
    except ValueError:
        found.append((f"target y {y!r} is not a number", "write y as a plain number such as "
                      "5.48 (no units, '.' as the decimal point)", "non_numeric_target"))
        return math.nan
    if math.isnan(value):
        found.append(("target y is NaN", "fill in a measured value, or remove the row",
                      "nan_target"))
    elif math.isinf(value):
        found.append((f"target y is infinite ({y})", "replace it with a finite value, or "
                      "remove the row", "inf_target"))
    return value


def _check_source(smiles: str | None, path: str | None, allow_outside_root: bool,
                  found: list[_Found]) -> None:
    """Exactly one of path / smiles; a path stays under the manifest's folder, with a known
    graph file extension."""
    if smiles and path:
        found.append(("row has both a path and a smiles", "fill exactly one of path / smiles",
                      "both_sources"))
    elif not smiles and not path:
        found.append(("row has neither a path nor a smiles", "fill exactly one of path / smiles",
                      "no_source"))
    elif path:
        if _outside_root(path) and not allow_outside_root:
            found.append((f"path {path!r} leaves the manifest's folder",
                          "move the file under the manifest's folder and use a relative path, "
                          "or pass allow_outside_root=True if you trust this manifest",
                          "path_outside_root"))
        suffix = _suffix(path)
        if suffix not in _GRAPH_SUFFIXES:
            found.append((f"unknown graph file extension {suffix or '(none)'!r} in {path!r}",
                          f"use one of {', '.join(_GRAPH_SUFFIXES)}", "unknown_extension"))


def _check_split(raw: str | None, found: list[_Found]) -> str | None:
    """The split in lower case when it is one of SPLITS, else ``raw`` as written."""
    split = (raw or "").lower()
    if split in SPLITS:
        return split
    if not split:
        found.append(("split is empty", "fill in train, val or test, or drop the split column "
                      "to get a seeded random split", "missing_split"))
    else:
        suggestion = _SPLIT_SYNONYMS.get(split)
        found.append((f"unknown split {raw!r}",
                      f"rename it to {suggestion!r}" if suggestion else
                      f"use one of {', '.join(SPLITS)}", "unknown_split"))
    return raw


def _noun(row: dict[str, Any]) -> str:
    """What a row is, for messages: a manifest row, or a graph of a dataset (no ``line``)."""
    return "row" if row.get("line") is not None else "graph"


def _place(row: dict[str, Any]) -> str:
    """Where a row is, for messages: its manifest line, or a dataset graph's index."""
    return f"line {row['line']}" if row.get("line") is not None else f"graph {row['index']}"


def _duplicate_ids(rows: list[dict[str, Any]], mfile: str) -> list[DataProblem]:
    """Every row whose id an earlier row already has (the first one is kept). Rows of a
    dataset carry ``index`` instead of ``line``."""
    problems: list[DataProblem] = []
    first: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["id"] in first:
            problems.append(DataProblem(
                row["line"], row["id"], mfile,
                f"id {row['id']!r} is already used on {_place(first[row['id']])}",
                f"give every {_noun(row)} a unique id (the first {_noun(row)} with this id is "
                "kept)",
                "duplicate_id", row.get("index")))
        else:
            first[row["id"]] = row
    return problems


def _singleton_groups(rows: list[dict[str, Any]], mfile: str) -> list[DataProblem]:
    """Warnings for groups of one row: they form no ranking pairs."""
    members = Counter(r["group"] for r in rows if r["group"] is not None)
    return [DataProblem(row["line"], row["id"], mfile,
                        f"group {row['group']!r} has only this {_noun(row)}, so it forms no "
                        "ranking pairs",
                        "add more graphs to the group, or merge it into another group",
                        "singleton_group", row.get("index"))
            for row in rows if row["group"] is not None and members[row["group"]] == 1]


def read_manifest(path: str | Path, *, allow_outside_root: bool = False) -> pd.DataFrame:
    """Parse and validate a manifest table (not the graph files).

    Accepts a UTF-8 BOM, CRLF line endings and ``,`` / ``;`` / tab delimiters (sniffed from the
    header). Returns one row per data row: id, y, split, group, smiles, path (None when empty),
    line. Raises :class:`DataError` with every table problem; ``singleton_group`` warnings are
    only logged.
    """
    parsed = _parse_manifest(path, allow_outside_root)
    errors = [p for p in parsed.problems if not p.is_warning]
    if errors:
        raise DataError(errors, parsed.manifest)
    if parsed.problems:
        logger.warning("%s: %d group(s) have a single row and form no ranking pairs (lines %s)",
                       parsed.manifest, len(parsed.problems),
                       ", ".join(str(p.line) for p in parsed.problems[:10]))
    assert parsed.table is not None
    return parsed.table
