"""Reading a manifest table and collecting every table-level problem (not the graph files)."""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
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


def _sniff_delimiter(first_line: str) -> str:
    counts = {d: first_line.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] > 0 else ","


def _outside_root(raw: str) -> bool:
    if PurePosixPath(raw).is_absolute() or PureWindowsPath(raw).drive or raw.startswith("\\"):
        return True
    parts = PurePosixPath(os.path.normpath(raw.replace("\\", "/"))).parts
    return bool(parts) and parts[0] == ".."


@dataclass
class _Parsed:
    """Internal result of reading a manifest: the table plus every table-level problem."""

    manifest: Path
    table: pd.DataFrame | None
    problems: list[DataProblem]
    fatal: bool  # a manifest-level problem: no rows can be used


def _parse_manifest(path: str | Path, allow_outside_root: bool) -> _Parsed:
    manifest = Path(path)
    mfile = str(manifest)

    def fatal(problem: str, fix: str, code: str) -> _Parsed:
        return _Parsed(manifest, None, [DataProblem(None, None, mfile, problem, fix, code)], True)

    if not manifest.is_file():
        return fatal(f"manifest {mfile} does not exist or is not a file",
                     "pass the path of your manifest.csv", "manifest_not_found")
    try:
        text = manifest.read_bytes().decode("utf-8-sig")  # -sig strips a UTF-8 BOM
    except UnicodeDecodeError as exc:
        return fatal(f"manifest is not UTF-8 text ({exc.reason} at byte {exc.start})",
                     "save it as UTF-8 (in Excel: 'CSV UTF-8')", "unreadable_manifest")
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    if not first:
        return fatal("manifest is empty", "write a header (y, and path or smiles) and one row "
                     "per graph", "empty_manifest")
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
    assert header is not None
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
    if problems:
        return _Parsed(manifest, None, problems, True)

    col = {c: header.index(c) for c in ("id", "y", "path", "smiles", "split", "group")
           if c in header}
    rows: list[dict[str, Any]] = []
    for pos, (line, rec) in enumerate(records):
        def get(name: str, rec: list[str] = rec) -> str | None:
            v = rec[col[name]].strip() if name in col and col[name] < len(rec) else ""
            return v or None

        rid = get("id") or str(pos)
        row = {"id": rid, "y": math.nan, "split": get("split"), "group": get("group"),
               "smiles": get("smiles"), "path": get("path"), "line": line}
        rows.append(row)

        def report(problem: str, fix: str, code: str, line: int = line, rid: str = rid) -> None:
            problems.append(DataProblem(line, rid, mfile, problem, fix, code))

        if len(rec) != len(header):
            report(f"row has {len(rec)} fields but the header has {len(header)}",
                   "quote fields that contain the delimiter, and give every row one field per "
                   "column", "wrong_field_count")
            continue
        y = get("y")
        if y is None:
            report("target y is empty", "fill in y, or remove the row", "missing_target")
        elif y.lower() in _NAN_WORDS:
            report(f"target y is NaN ({y!r})", "fill in a measured value, or remove the row",
                   "nan_target")
        else:
            try:
                row["y"] = float(y)
            except ValueError:
                report(f"target y {y!r} is not a number", "write y as a plain number such as "
                       "5.48 (no units, '.' as the decimal point)", "non_numeric_target")
            else:
                if math.isnan(row["y"]):
                    report("target y is NaN", "fill in a measured value, or remove the row",
                           "nan_target")
                elif math.isinf(row["y"]):
                    report(f"target y is infinite ({y})", "replace it with a finite value, or "
                           "remove the row", "inf_target")
        if row["smiles"] and row["path"]:
            report("row has both a path and a smiles", "fill exactly one of path / smiles",
                   "both_sources")
        elif not row["smiles"] and not row["path"]:
            report("row has neither a path nor a smiles", "fill exactly one of path / smiles",
                   "no_source")
        elif row["path"]:
            if _outside_root(row["path"]) and not allow_outside_root:
                report(f"path {row['path']!r} leaves the manifest's folder",
                       "move the file under the manifest's folder and use a relative path, or "
                       "pass allow_outside_root=True if you trust this manifest",
                       "path_outside_root")
            suffix = PurePosixPath(row["path"].replace("\\", "/")).suffix.lower()
            if suffix not in _GRAPH_SUFFIXES:
                report(f"unknown graph file extension {suffix or '(none)'!r} in "
                       f"{row['path']!r}", f"use one of {', '.join(_GRAPH_SUFFIXES)}",
                       "unknown_extension")
        if "split" in col:
            split = (row["split"] or "").lower()
            if not split:
                report("split is empty", "fill in train, val or test, or drop the split column "
                       "to get a seeded random split", "missing_split")
            elif split not in SPLITS:
                suggestion = _SPLIT_SYNONYMS.get(split)
                report(f"unknown split {row['split']!r}",
                       f"rename it to {suggestion!r}" if suggestion else
                       f"use one of {', '.join(SPLITS)}", "unknown_split")
            else:
                row["split"] = split
        if "group" in col and row["group"] is None:
            report("group is empty", "fill in the query id this graph belongs to",
                   "missing_group")

    first_line: dict[str, int] = {}
    for row in rows:
        if row["id"] in first_line:
            problems.append(DataProblem(
                row["line"], row["id"], mfile,
                f"id {row['id']!r} is already used on line {first_line[row['id']]}",
                "give every row a unique id (the first row with this id is kept)",
                "duplicate_id"))
        else:
            first_line[row["id"]] = row["line"]
    members = Counter(r["group"] for r in rows if r["group"] is not None)
    for row in rows:
        if row["group"] is not None and members[row["group"]] == 1:
            problems.append(DataProblem(
                row["line"], row["id"], mfile,
                f"group {row['group']!r} has only this row, so it forms no ranking pairs",
                "add more graphs to the group, or merge it into another group",
                "singleton_group"))
    # object dtype keeps None for empty cells (pandas' string dtype would turn them into NaN)
    table = pd.DataFrame(rows, columns=["id", "y", "split", "group", "smiles", "path", "line"],
                         dtype=object)
    problems.sort(key=lambda p: (p.line or 0))
    return _Parsed(manifest, table.astype({"y": "float64", "line": "int64"}), problems, False)


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
