"""gatrank.project: ``gatrank notebooks DIR`` writes the five notebooks and their params with
the presets in both places (the ``parameters`` cell JupyterLab runs and the YAML the suite
injects), every other line the source's; it never overwrites without ``force``. The notebooks
are the project's, else the checkout's, else the wheel's bundle."""

from __future__ import annotations

import ast
import difflib
import json
from pathlib import Path

import nbformat
import pytest
import yaml
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

import gatrank.project
from gatrank.project import (
    NOTEBOOKS,
    notebook_folders,
    set_parameter_defaults,
    set_yaml_values,
    write_notebooks,
)
from gatrank.suite.run import notebook_parameters

ROOT = Path(__file__).resolve().parents[1]


def _parameters_cell(path: Path) -> nbformat.NotebookNode:
    nb = nbformat.read(str(path), as_version=4)
    return next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))


def _defaults(path: Path) -> dict:
    """The literal defaults of a notebook's parameters cell, by name."""
    tree = ast.parse(_parameters_cell(path).source)
    return {s.target.id: ast.literal_eval(s.value) for s in tree.body}


def test_writes_the_notebooks_and_params_with_the_manifest_preset_in_both(tmp_path,
                                                                          monkeypatch):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "manifest.csv").write_text("y,smiles\n1,C\n")
    monkeypatch.chdir(tmp_path)  # a relative --manifest is read from the working folder
    written = write_notebooks("proj", {"manifest": "data/manifest.csv", "model": "mine:Net",
                                       "loss": ""})
    manifest = str(tmp_path / "data" / "manifest.csv")
    proj = tmp_path / "proj"
    yamls = sorted(p.name for p in (ROOT / "params").glob("*.yaml"))
    assert sorted(written) == sorted([proj / "notebooks" / f"{n}.ipynb" for n in NOTEBOOKS]
                                     + [proj / "params" / y for y in yamls])
    for name in NOTEBOOKS:
        src, dst = ROOT / "notebooks" / f"{name}.ipynb", proj / "notebooks" / f"{name}.ipynb"
        # JupyterLab runs the parameters cell's defaults: the presets, the rest unchanged
        assert _defaults(dst) == {**_defaults(src), "manifest": manifest, "model": "mine:Net"}
        a, b = (nbformat.read(str(p), as_version=4) for p in (src, dst))
        assert [c.source for c in a.cells if "parameters" not in c.metadata.get("tags", [])] \
            == [c.source for c in b.cells if "parameters" not in c.metadata.get("tags", [])]
        assert a.metadata == b.metadata
        changed = [ln for ln in difflib.unified_diff(src.read_text().splitlines(),
                                                     dst.read_text().splitlines(), n=0)
                   if ln[:1] in "+-" and ln[:3] not in ("+++", "---")]
        assert len(changed) == 4 and all('"manifest: str = ' in ln or '"model: str = ' in ln
                                         for ln in changed), changed
        # the suite (and papermill -f) inject the params YAML: the presets there too
        raw = yaml.safe_load((proj / "params" / f"{name}.yaml").read_text())
        assert raw == {**yaml.safe_load((ROOT / "params" / f"{name}.yaml").read_text()),
                       "manifest": manifest, "model": "mine:Net"}
        injected = notebook_parameters(dst, proj / "params" / f"{name}.yaml", {})
        assert injected["manifest"] == manifest and injected["loss"] == ""
    # the YAML's comments survive (they document each parameter)
    assert "# manifest.csv; empty: the embedded default" in (
        proj / "params" / "03_overfit.yaml").read_text()
    assert (proj / "params" / "config_example.yaml").read_bytes() == (
        ROOT / "params" / "config_example.yaml").read_bytes()


def test_existing_files_are_listed_and_nothing_is_written_without_force(tmp_path):
    mine = tmp_path / "params" / "03_overfit.yaml"
    mine.parent.mkdir()
    mine.write_text("n: 8\n")
    with pytest.raises(FileExistsError, match="pass --force") as err:
        write_notebooks(tmp_path)
    assert str(mine) in str(err.value) and "1 file(s) exist" in str(err.value)
    assert mine.read_text() == "n: 8\n"
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["03_overfit.yaml"]
    write_notebooks(tmp_path, force=True)
    assert yaml.safe_load(mine.read_text())["n"] == 32
    with pytest.raises(FileExistsError, match="11 file"):
        write_notebooks(tmp_path)


def test_a_missing_manifest_or_unknown_preset_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="--manifest nowhere.csv: no such file"):
        write_notebooks(tmp_path / "p", {"manifest": "nowhere.csv"})
    with pytest.raises(ValueError, match=r"cannot preset \['learning_rate'\]"):
        write_notebooks(tmp_path / "p", {"learning_rate": "0.1"})
    assert not (tmp_path / "p").exists()


def _project_with_a_dataset_parameter(root: Path) -> None:
    """A gatrank project whose 01 and 03 declare ``dataset`` and the others do not."""
    for folder in ("notebooks", "params"):
        (root / folder).mkdir(parents=True)
    for i, name in enumerate(NOTEBOOKS):
        nb = new_notebook()
        params = 'manifest: str = ""  # data\n' + ('dataset: str = ""  # or a dataset\n'
                                                   if i in (0, 2) else "")
        cell = new_code_cell(params)
        cell.metadata["tags"] = ["parameters"]
        nb.cells = [new_markdown_cell(f"# {name}"), cell]
        nbformat.write(nb, str(root / "notebooks" / f"{name}.ipynb"))
        (root / "params" / f"{name}.yaml").write_text('manifest: ""  # data\n')


@pytest.mark.parametrize("spec", ["mypkg.data:train_set", "graphs.pt"])
def test_dataset_is_preset_only_where_a_notebook_declares_it(tmp_path, monkeypatch, spec):
    _project_with_a_dataset_parameter(tmp_path / "src")
    (tmp_path / "src" / "graphs.pt").write_bytes(b"")
    monkeypatch.chdir(tmp_path / "src")  # the project in the working folder is the source
    write_notebooks(tmp_path / "out", {"dataset": spec})
    expected = str(tmp_path / "src" / spec) if spec.endswith(".pt") else spec
    for i, name in enumerate(NOTEBOOKS):
        defaults = _defaults(tmp_path / "out" / "notebooks" / f"{name}.ipynb")
        raw = yaml.safe_load((tmp_path / "out" / "params" / f"{name}.yaml").read_text())
        if i in (0, 2):
            assert defaults["dataset"] == raw["dataset"] == expected
        else:  # a YAML key the notebook lacks would be an error for the suite
            assert "dataset" not in defaults and "dataset" not in raw


def test_set_parameter_defaults_replaces_only_the_literal():
    source = ('manifest: str = "a # b"  # the data (défaut: none)\n'
              "n: int = 3  # graphs\n"
              "other = 'x'  # untyped\n")
    out = set_parameter_defaults(source, {"manifest": 'C:\\ "q" é', "other": "y", "absent": "z"})
    assert out.splitlines() == [
        'manifest: str = "C:\\\\ \\"q\\" é"  # the data (défaut: none)',
        "n: int = 3  # graphs",
        'other = "y"  # untyped',
    ]
    assert ast.literal_eval(ast.parse(out).body[0].value) == 'C:\\ "q" é'
    with pytest.raises(ValueError, match="spans lines 1-2"):
        set_parameter_defaults('manifest: str = ("a"\n  "b")  # x\n', {"manifest": "c"})


def test_set_yaml_values_keeps_comments_and_appends_missing_keys():
    text = ('# header\nmanifest: "a # not a comment"   # the data\nseed: 0\n'
            "model: ''\n")
    tricky = 'x: "y" # z \\ é'
    out = set_yaml_values(text, {"manifest": tricky, "model": "m:N", "dataset": "d:s"})
    assert out.splitlines() == [
        "# header",
        f"manifest: {json.dumps(tricky, ensure_ascii=False)}  # the data",
        "seed: 0",
        'model: "m:N"',
        'dataset: "d:s"',
    ]
    assert yaml.safe_load(out) == {"manifest": tricky, "seed": 0, "model": "m:N",
                                   "dataset": "d:s"}


def test_notebook_folders_are_the_projects_else_the_checkouts(tmp_path, monkeypatch):
    # a folder of the user's own notebooks/ and params/ (none of gatrank's) is no gatrank project
    for d in ("notebooks", "params"):
        (tmp_path / "theirs" / d).mkdir(parents=True)
    (tmp_path / "theirs" / "notebooks" / "analysis.ipynb").write_text("{}")
    monkeypatch.chdir(tmp_path / "theirs")
    assert notebook_folders() == (ROOT / "notebooks", ROOT / "params")  # the editable checkout
    # a project as `gatrank notebooks` writes it, from its folder or one below
    for d in ("notebooks", "params"):
        (tmp_path / "mine" / d).mkdir(parents=True)
    (tmp_path / "mine" / "notebooks" / "03_overfit.ipynb").write_text("{}")
    monkeypatch.chdir(tmp_path / "mine" / "notebooks")
    assert notebook_folders() == (tmp_path / "mine" / "notebooks", tmp_path / "mine" / "params")


def test_without_a_project_the_wheels_bundle_else_a_clear_error(tmp_path, monkeypatch):
    # what an installed wheel sees: no project above cwd, no checkout above the package (the
    # wheel test runs the real thing)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(gatrank.project, "_CHECKOUT", tmp_path / "site-packages")
    bundle = tmp_path / "_bundled"
    monkeypatch.setattr(gatrank.project, "BUNDLED", bundle)
    with pytest.raises(FileNotFoundError, match="not in a gatrank project.*pass --notebooks-dir"):
        notebook_folders()
    (bundle / "notebooks").mkdir(parents=True)
    assert notebook_folders() == (bundle / "notebooks", bundle / "params")
