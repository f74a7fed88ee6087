"""gatrank.data.manifest: reading the table robustly and its manifest-level problems."""

from __future__ import annotations

import os
import random

import pytest
from tiny_graphs import save_pt, write_manifest

from gatrank.data import DataError, check_manifest, load_graphs, read_manifest


@pytest.mark.parametrize("text,code", [
    ("", "empty_manifest"),
    ("\n\n", "empty_manifest"),
    ("id,y,path\n", "empty_manifest"),
    ("id,target,path\na,1,a.pt\n", "missing_y_column"),
    ("id,y\na,1\n", "missing_source_column"),
    ("y,y,path\n1,2,a.pt\n", "duplicate_column"),
])
def test_manifest_level_problems_always_raise(files, text, code):
    manifest = write_manifest(files, text)
    for on_error in ("raise", "skip"):
        with pytest.raises(DataError) as err:
            load_graphs(manifest, on_error=on_error)
        assert [p.code for p in err.value.problems] == [code]
        assert err.value.problems[0].line is None and err.value.problems[0].file == str(manifest)
    report = check_manifest(manifest)
    assert not report.ok and report.summary["num_graphs"] == 0


def test_missing_manifest_and_non_utf8_manifest(tmp_path):
    assert check_manifest(tmp_path / "nope.csv").problems[0].code == "manifest_not_found"
    (tmp_path / "latin.csv").write_bytes("y,smiles\n1,CCO\n\xe9\n".encode("latin-1"))
    assert check_manifest(tmp_path / "latin.csv").problems[0].code == "unreadable_manifest"


def test_paths_outside_root_refused_unless_allowed(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    save_pt(tmp_path / "outside.pt")
    manifest = write_manifest(data_dir, f"y,path\n1,../outside.pt\n2,{tmp_path / 'outside.pt'}\n")
    with pytest.raises(DataError) as err:
        load_graphs(manifest)
    assert [(p.code, p.line) for p in err.value.problems] == [("path_outside_root", 2),
                                                              ("path_outside_root", 3)]
    assert len(load_graphs(manifest, allow_outside_root=True)) == 2


def test_inner_dotdot_that_stays_inside_is_fine(files):
    (files / "sub").mkdir()
    assert len(load_graphs(write_manifest(files, "y,path\n1,sub/../a.pt\n2,b.pt\n"))) == 2


@pytest.mark.parametrize("raw", [
    b"\xef\xbb\xbfid,y,smiles\r\na,1.5,CCO\r\nb,2.5,CCN\r\n",
    b"id;y;smiles\na;1.5;CCO\nb;2.5;CCN\n",
    b"\xef\xbb\xbfid;y;smiles\r\na;1.5;CCO\r\n\r\nb;2.5;CCN",
    b"id\ty\tsmiles\na\t1.5\tCCO\nb\t2.5\tCCN\n",
    b"ID , Y , SMILES\na , 1.5 , CCO\nb , 2.5 , CCN\n",
])
def test_bom_crlf_and_delimiters_parse(tmp_path, raw):
    (tmp_path / "m.csv").write_bytes(raw)
    table = read_manifest(tmp_path / "m.csv")
    assert table["id"].tolist() == ["a", "b"] and table["y"].tolist() == [1.5, 2.5]
    assert table["smiles"].tolist() == ["CCO", "CCN"]
    assert len(load_graphs(tmp_path / "m.csv")) == 2


def test_line_numbers_survive_blank_lines_and_quoted_newlines(tmp_path):
    text = 'id,y,smiles,note\n\na,1,CCO,"two\nlines"\nb,x,CCN,\n'
    with pytest.raises(DataError) as err:
        read_manifest(write_manifest(tmp_path, text))
    assert [(p.line, p.id) for p in err.value.problems] == [(5, "b")]


def _outside_root_by_pathlib(raw: str) -> bool:
    """The rule as pathlib reads it (what _outside_root did before it was made fast)."""
    from pathlib import PurePosixPath, PureWindowsPath

    if PurePosixPath(raw).is_absolute() or PureWindowsPath(raw).drive or raw.startswith("\\"):
        return True
    parts = PurePosixPath(os.path.normpath(raw.replace("\\", "/"))).parts
    return bool(parts) and parts[0] == ".."


def test_the_string_path_rules_agree_with_pathlib_on_every_shape_of_path():
    from pathlib import PurePosixPath

    from gatrank.data.manifest import _outside_root, _suffix

    pieces = ["a", "b.pt", "..", ".", "", "C:", "c:x", "1:", "x.", ".hidden", "g.JSON",
              "a.b.npz", "\\", "\\\\srv", "/", "//", "...", "..x", "d.gml"]
    rng = random.Random(0)
    seen = 0
    for _ in range(4000):
        raw = rng.choice(["/", "\\", ""]).join(rng.choice(pieces)
                                               for _ in range(rng.randint(1, 4)))
        if not raw:
            continue
        seen += 1
        assert _outside_root(raw) == _outside_root_by_pathlib(raw), raw
        assert _suffix(raw) == PurePosixPath(raw.replace("\\", "/")).suffix.lower(), raw
    assert seen > 3000
