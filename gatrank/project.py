"""The project layout: where the five notebooks and their params are, and a copy of them in a
user's own folder with parameters preset.

A gatrank project is a folder holding ``notebooks/`` and ``params/`` (DESIGN.md's layout): this
repository, or a copy :func:`write_notebooks` (``gatrank notebooks DIR``) writes::

    DIR/notebooks/01_data_checks.ipynb ... 05_eval.ipynb
    DIR/params/01_data_checks.yaml ... 05_eval.yaml, config_example.yaml

JupyterLab opened on ``DIR/notebooks`` finds ``DIR`` as the project (results go to
``DIR/reports/interactive``, 04 reads ``params/config_example.yaml``), and ``gatrank suite`` run
in ``DIR`` runs these copies. An installed wheel carries its own copies (:data:`BUNDLED`, put
there by setup.py at build time) for use outside any project (:func:`notebook_folders`).

A preset (``manifest``, ``dataset``, ``config``, ``model``, ``loss``) is written twice: as the
literal default of the notebook's ``parameters`` cell (what JupyterLab runs) and into its params
YAML (what the suite and ``papermill -f`` inject). Paths are written absolute, since the kernels
run in ``DIR/notebooks``. Only json, yaml and ast are imported here: copying files must not wait
seconds for torch or nbformat.
"""

from __future__ import annotations

import ast
import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path

import yaml

__all__ = [
    "NOTEBOOKS",
    "NEEDS",
    "HEADLESS_ENV",
    "BUNDLED",
    "PRESETS",
    "project_root",
    "notebook_folders",
    "write_notebooks",
    "set_parameter_defaults",
    "set_yaml_values",
]

logger = logging.getLogger(__name__)

NOTEBOOKS: tuple[str, ...] = (
    "01_data_checks",
    "02_loss_tests",
    "03_overfit",
    "04_full_train",
    "05_eval",
)
"""The notebooks in the runbook's order (each one step of it): the order of the suite's report."""

STEPS: dict[str, str] = {
    "01_data_checks": "Step 2B: data pipeline",
    "02_loss_tests": "Step 2A: loss function",
    "03_overfit": "Step 1: overfit test",
    "04_full_train": "Step 3: full training",
    "05_eval": "Enhanced evaluation",
}
"""The runbook step each notebook implements."""

NEEDS: dict[str, tuple[str, ...]] = {"05_eval": ("04_full_train",)}
"""Notebooks that read another's output (05_eval scores 04_full_train's checkpoint): the suite
starts them only once those have finished. The others need nothing from each other."""

HEADLESS_ENV = "GATRANK_HEADLESS"
"""Set to ``1`` by ``gatrank suite`` for its kernels: no front end will see what a notebook draws
while it runs, so live redraws are skipped (the final figures are the same)."""

BUNDLED = Path(__file__).resolve().parent / "_bundled"
"""Where a built wheel holds its copies of ``notebooks/`` and ``params/`` (setup.py puts them
there at build time; git holds only the top-level folders)."""

_CHECKOUT = Path(__file__).resolve().parents[1]
"""The repository an editable install runs from (in a wheel: site-packages, no notebooks)."""


# --------------------------------------------------------------------------- where they are


def project_root(start: str | Path | None = None) -> Path | None:
    """The project folder: the first of ``start`` (default: cwd) and its parents that holds
    both ``notebooks/`` and ``params/``; else the checkout gatrank runs from if it does; else
    ``None``."""
    here = Path(start or Path.cwd()).resolve()
    for d in (here, *here.parents, _CHECKOUT):
        if (d / "notebooks").is_dir() and (d / "params").is_dir():
            return d
    return None


def notebook_folders() -> tuple[Path, Path]:
    """The ``notebooks/`` and ``params/`` folders the suite runs by default.

    The project's (the working folder or the first folder above it holding both, as
    ``gatrank notebooks DIR`` writes them), else the checkout's an editable install runs from,
    each only when its ``notebooks/`` holds one of :data:`NOTEBOOKS` (a user's own
    ``notebooks/`` is no gatrank project); else the copies bundled in the installed wheel
    (:data:`BUNDLED`).

    Raises:
        FileNotFoundError: neither exists (a gatrank installed from a build without them).
    """
    for root in (project_root(), _CHECKOUT):
        if root is not None and any((root / "notebooks" / f"{n}.ipynb").is_file()
                                    for n in NOTEBOOKS):
            return root / "notebooks", root / "params"
    if (BUNDLED / "notebooks").is_dir():
        return BUNDLED / "notebooks", BUNDLED / "params"
    raise FileNotFoundError(
        f"no notebooks: {Path.cwd()} is not in a gatrank project (a folder with notebooks/ and "
        f"params/) and this gatrank has none bundled ({BUNDLED} is missing). Run from the "
        "project, pass --notebooks-dir, or install gatrank from a wheel built by its setup.py "
        "(pip install gatrank, or pip wheel . in the repository)"
    )


# --------------------------------------------------------------------------- a preset copy

PRESETS: tuple[str, ...] = ("manifest", "dataset", "config", "model", "loss")
"""The parameters :func:`write_notebooks` presets (strings, common to the notebooks)."""

_PATHS = ("manifest", "config")
"""Presets that are always file paths (``dataset`` is one when it is not an import string)."""


def _absolute(presets: Mapping[str, str]) -> dict[str, str]:
    """The non-empty presets, file paths made absolute (relative ones are read from cwd).

    Raises:
        ValueError: a name that is not one of :data:`PRESETS`.
        FileNotFoundError: a path preset that names no file.
    """
    unknown = sorted(set(presets) - set(PRESETS))
    if unknown:
        raise ValueError(f"cannot preset {unknown}; presettable parameters: {list(PRESETS)}")
    out: dict[str, str] = {}
    for name, value in presets.items():
        if not value:
            continue
        path = Path(value).expanduser()
        # a dataset is a path when it names a file (or a .pt); else an import string mod:name
        is_path = name in _PATHS or (name == "dataset" and (path.exists() or value.endswith(".pt")))
        if is_path and not path.is_file():
            raise FileNotFoundError(f"--{name} {value}: no such file ({path.resolve()})")
        out[name] = str(path.resolve()) if is_path else value
    return out


def set_parameter_defaults(source: str, values: Mapping[str, str]) -> str:
    """A ``parameters`` cell's source with the literal defaults of ``values``' names replaced
    (``name: type = literal  # help`` lines; types and help comments are kept). Names the cell
    does not declare are ignored.

    Raises:
        ValueError: a default to replace that spans more than one line.
    """
    lines = source.splitlines(keepends=True)
    for stmt in ast.parse(source).body:
        target = stmt.target if isinstance(stmt, ast.AnnAssign) else (
            stmt.targets[0] if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 else None)
        if not isinstance(target, ast.Name) or target.id not in values or stmt.value is None:
            continue
        v = stmt.value
        if v.lineno != v.end_lineno:
            raise ValueError(f"parameters cell: the default of {target.id} spans lines "
                             f"{v.lineno}-{v.end_lineno}; keep each default on one line")
        line = lines[v.lineno - 1].encode()  # ast's column offsets count UTF-8 bytes
        literal = json.dumps(values[target.id], ensure_ascii=False).encode()  # a Python literal
        lines[v.lineno - 1] = (line[: v.col_offset] + literal + line[v.end_col_offset:]).decode()
    return "".join(lines)


def _declared(source: str) -> set[str]:
    """The names a ``parameters`` cell assigns."""
    names: set[str] = set()
    for stmt in ast.parse(source).body:
        targets = [stmt.target] if isinstance(stmt, ast.AnnAssign) else (
            stmt.targets if isinstance(stmt, ast.Assign) else [])
        names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def _comment(rest: str) -> str:
    """The trailing ``# comment`` of a YAML value (``rest`` is what follows ``key:``): the first
    ``#`` after a blank whose removal leaves the value as it was (not a ``#`` inside quotes)."""
    value = yaml.safe_load(f"k:{rest}")["k"]
    for m in re.finditer(r"\s#", rest):
        try:
            if yaml.safe_load(f"k:{rest[: m.start()]}")["k"] == value:
                return "  " + rest[m.start():].lstrip()
        except yaml.YAMLError:
            continue
    return ""


def set_yaml_values(text: str, values: Mapping[str, str]) -> str:
    """A params YAML (flat ``key: value  # comment`` lines) with ``values`` set, comments kept;
    keys it lacks are appended. Strings are written JSON-quoted, which YAML reads back as is."""
    todo = dict(values)
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"([A-Za-z_]\w*):(.*)$", line)
        if m and m.group(1) in todo:
            key = m.group(1)
            lines[i] = f"{key}: {json.dumps(todo.pop(key), ensure_ascii=False)}" + _comment(
                m.group(2))
    lines += [f"{k}: {json.dumps(v, ensure_ascii=False)}" for k, v in todo.items()]
    return "\n".join(lines) + "\n"


def _preset_notebook(src: Path, presets: Mapping[str, str]) -> tuple[str, set[str]]:
    """The notebook's JSON with its ``parameters`` cell preset, and the names the cell declares.

    Read and written as JSON the way nbformat writes it (sorted keys, indent 1, sources as
    lists of lines), so the copy differs from the source in the preset lines only.

    Raises:
        ValueError: the notebook has no cell tagged ``parameters``.
    """
    nb = json.loads(src.read_text(encoding="utf-8"))
    cell = next((c for c in nb["cells"]
                 if "parameters" in c.get("metadata", {}).get("tags", [])), None)
    if cell is None:
        raise ValueError(f"{src}: no cell tagged 'parameters' to preset")
    source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
    cell["source"] = set_parameter_defaults(source, presets).splitlines(keepends=True)
    return json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + "\n", _declared(source)


def write_notebooks(folder: str | Path, presets: Mapping[str, str] | None = None, *,
                    force: bool = False) -> list[Path]:
    """Write the five notebooks to ``folder/notebooks`` and every params YAML to
    ``folder/params``, ``presets`` set in both; returns the files written.

    Args:
        folder: the user's project folder (created if missing).
        presets: values of :data:`PRESETS` (empty ones are left at the notebook's default); a
            name no notebook declares (``dataset`` in a gatrank without it) is an error.
        force: overwrite files that exist; without it nothing is written if any does.

    Raises:
        FileExistsError: listing every file that exists (without ``force``).
        FileNotFoundError: a ``manifest``/``config``/``dataset`` file that does not exist.
        ValueError: a preset no notebook declares.
    """
    values = _absolute(presets or {})
    nb_src, params_src = notebook_folders()
    dest = Path(folder).expanduser().resolve()
    texts: dict[Path, str] = {}
    declared_any: set[str] = set()
    for name in NOTEBOOKS:
        nb_text, declared = _preset_notebook(nb_src / f"{name}.ipynb", values)
        declared_any |= declared
        mine = {k: v for k, v in values.items() if k in declared}
        texts[dest / "notebooks" / f"{name}.ipynb"] = nb_text
        yml = params_src / f"{name}.yaml"
        texts[dest / "params" / yml.name] = set_yaml_values(
            yml.read_text() if yml.is_file() else "", mine)
    undeclared = sorted(set(values) - declared_any)
    if undeclared:
        raise ValueError(f"cannot preset {undeclared}: no notebook in {nb_src} declares it "
                         "(this gatrank's notebooks predate that parameter)")
    for extra in sorted(params_src.glob("*.yaml")):  # config_example.yaml: copied as it is
        texts.setdefault(dest / "params" / extra.name, extra.read_text())
    exist = sorted(p for p in texts if p.exists())
    if exist and not force:
        raise FileExistsError(
            f"{len(exist)} file(s) exist in {dest}; nothing written (pass --force to overwrite "
            "them):\n" + "\n".join(f"  {p}" for p in exist)
        )
    for path, text in texts.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    logger.debug("wrote %d files to %s with %s", len(texts), dest, values)
    return list(texts)
