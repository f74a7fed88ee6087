"""gatrank.data: loaders, collected validation, skipping, safe loading, the cache, splits."""

from __future__ import annotations

import json
import logging
import math
import os
import pickle

import networkx as nx
import numpy as np
import pytest
import torch
from torch_geometric.data import Batch, Data
from torch_geometric.utils import from_smiles

import gatrank.data as gd
import gatrank.data.featurize as gd_featurize
import gatrank.data.graphset as gd_graphset
from gatrank.data import (
    CheckReport,
    DataError,
    UnsafeFileError,
    check_manifest,
    featurize_smiles,
    load_graphs,
    read_manifest,
    safe_torch_load,
    split_indices,
)

# A 4-cycle with 3 node features, both edge directions: [2, 8].
X4 = torch.arange(12, dtype=torch.float32).view(4, 3)
EI4 = torch.tensor([[0, 1, 1, 2, 2, 3, 3, 0], [1, 0, 2, 1, 3, 2, 0, 3]])


def edge_set(ei: torch.Tensor) -> set[tuple[int, int]]:
    return set(map(tuple, ei.t().tolist()))


def save_pt(path, x=X4, edge_index=EI4, **extra) -> str:
    torch.save(Data(x=x, edge_index=edge_index, **extra), path)
    return path.name


def write_manifest(tmp_path, text: str, name: str = "manifest.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def files(tmp_path):
    """Two good graphs and one file per kind of breakage, in tmp_path."""
    save_pt(tmp_path / "a.pt")
    save_pt(tmp_path / "b.pt", x=X4 + 1)
    data = (tmp_path / "a.pt").read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "corrupt.json").write_text('{"x": [[1, 2], ')
    (tmp_path / "notes.txt").write_text("not a graph")
    save_pt(tmp_path / "no_nodes.pt", x=torch.zeros(0, 3), edge_index=torch.zeros(2, 0).long())
    save_pt(tmp_path / "no_edges.pt", edge_index=torch.zeros(2, 0, dtype=torch.long))
    save_pt(tmp_path / "out_of_range.pt", edge_index=torch.tensor([[0, 1], [1, 12]]))
    np.savez(tmp_path / "float_edges.npz", x=X4.numpy(), edge_index=np.array([[0, 0.5], [1, 2]]))
    save_pt(tmp_path / "wide.pt", x=torch.ones(4, 5))
    x_nan = X4.clone()
    x_nan[2, 1] = math.nan
    save_pt(tmp_path / "nan_x.pt", x=x_nan)
    save_pt(tmp_path / "inf_edge.pt", edge_attr=torch.tensor([[1.0]] * 7 + [[math.inf]]))
    return tmp_path


# ----------------------------------------------------------------- loaders round-trip


def _write_networkx(path, fmt):
    g = nx.cycle_graph(4)
    for i in g.nodes:
        g.nodes[i]["b"] = float(i)
        g.nodes[i]["a"] = 10 * i  # features sort by name: [a, b]
        g.nodes[i]["name"] = f"n{i}"  # not numeric: ignored
    (nx.write_graphml if fmt == "graphml" else nx.write_gml)(g, path)


def _node_link(path):
    nodes = [{"id": f"n{i}", "x": X4[i].tolist()} for i in range(4)]
    links = [{"source": f"n{u}", "target": f"n{v}"} for u, v in EI4.t().tolist()]
    path.write_text(json.dumps({"directed": True, "nodes": nodes, "links": links}))


WRITERS = {
    "pt_data": ("g.pt", lambda p: save_pt(p)),
    "pt_dict": ("g.pt", lambda p: torch.save({"x": X4.double(), "edge_index": EI4}, p)),
    "json_simple": ("g.json", lambda p: p.write_text(json.dumps(
        {"x": X4.tolist(), "edge_index": EI4.tolist()}))),
    "json_node_link": ("g.json", _node_link),
    "npz": ("g.npz", lambda p: np.savez(p, x=X4.numpy().astype(np.int64),
                                         edge_index=EI4.numpy())),
    "npz_whole_float_edges": ("g.npz", lambda p: np.savez(p, x=X4.numpy(),
                                                           edge_index=EI4.numpy() * 1.0)),
}


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_loader_round_trips(tmp_path, fmt):
    name, write = WRITERS[fmt]
    write(tmp_path / name)
    gs = load_graphs(write_manifest(tmp_path, f"y,path\n1.5,{name}\n"))
    g = gs[0]
    assert g.x.dtype == torch.float32 and torch.equal(g.x, X4)
    assert edge_set(g.edge_index) == edge_set(EI4) and g.edge_index.shape == (2, 8)


@pytest.mark.parametrize("fmt", ["graphml", "gml"])
def test_networkx_formats_use_sorted_numeric_attributes_both_directions(tmp_path, fmt):
    _write_networkx(tmp_path / f"g.{fmt}", fmt)
    g = load_graphs(write_manifest(tmp_path, f"y,path\n1,g.{fmt}\n"))[0]
    expected_x = torch.tensor([[10.0 * i, float(i)] for i in range(4)])
    assert torch.equal(g.x, expected_x)
    assert edge_set(g.edge_index) == edge_set(EI4)  # undirected cycle -> both directions


def test_json_node_link_undirected_numeric_attributes_and_edge_attr(tmp_path):
    obj = {"nodes": [{"id": 0, "q": 1.0}, {"id": 1, "q": 2.0}, {"id": 2, "q": 3.0}],
           "edges": [{"source": 0, "target": 1, "w": 0.5}, {"source": 1, "target": 2, "w": 2}]}
    (tmp_path / "g.json").write_text(json.dumps(obj))
    g = load_graphs(write_manifest(tmp_path, "y,path\n1,g.json\n"))[0]
    assert g.x.tolist() == [[1.0], [2.0], [3.0]]
    assert edge_set(g.edge_index) == {(0, 1), (1, 0), (1, 2), (2, 1)}
    weights = {e: w for e, w in zip(map(tuple, g.edge_index.t().tolist()),
                                    g.edge_attr.view(-1).tolist(), strict=True)}
    assert weights[(1, 0)] == weights[(0, 1)] == 0.5 and weights[(2, 1)] == 2.0


def test_npz_edge_attr_and_pt_edge_attr_round_trip(tmp_path):
    ea = torch.arange(8, dtype=torch.float64).view(8, 1)
    np.savez(tmp_path / "g.npz", x=X4.numpy(), edge_index=EI4.numpy(), edge_attr=ea.numpy())
    save_pt(tmp_path / "g.pt", edge_attr=ea.float())
    gs = load_graphs(write_manifest(tmp_path, "y,path\n1,g.npz\n2,g.pt\n"))
    for g in gs.graphs:
        assert g.edge_attr.dtype == torch.float32 and torch.equal(g.edge_attr, ea.float())


def test_graph_invariants_and_batching(tmp_path):
    save_pt(tmp_path / "a.pt")
    save_pt(tmp_path / "b.pt", x=X4 * 2)
    text = "id,y,path,smiles,group\na,1.0,a.pt,,q1\nb,2.0,b.pt,,q1\nc,3.0,,CCO,q2\nd,0.5,,CC,q2\n"
    with pytest.raises(DataError) as err:  # SMILES give 177 features, files 3: mixed widths
        load_graphs(write_manifest(tmp_path, text))
    assert {p.code for p in err.value.problems} == {"feature_width_mismatch",
                                                    "edge_feature_width_mismatch"}
    text = "id,y,path,group\na,1.0,a.pt,q1\nb,2.0,b.pt,q1\nc,3.0,a.pt,q2\nd,0.5,b.pt,q2\n"
    gs = load_graphs(write_manifest(tmp_path, text))
    for i, g in enumerate(gs.graphs):
        assert g.x.dtype == torch.float32 and g.x.shape == (4, gs.num_features)
        assert g.edge_index.dtype == torch.int64 and g.edge_index.shape[0] == 2
        assert g.y.dtype == torch.float32 and g.y.shape == (1,)
        assert g.group.dtype == torch.int64 and g.idx.tolist() == [i]
    batch = Batch.from_data_list(gs.graphs)
    assert batch.group.tolist() == [0, 0, 1, 1] and batch.idx.tolist() == [0, 1, 2, 3]
    assert batch.y.tolist() == [1.0, 2.0, 3.0, 0.5] and batch.gid == ["a", "b", "c", "d"]
    assert list(gs.table.columns) == ["id", "y", "split", "group", "smiles", "path", "line",
                                      "num_nodes", "num_edges"]
    assert gs.table["line"].tolist() == [2, 3, 4, 5] and gs.dropped == []


def test_fast_data_construction_matches_the_constructor():
    attrs = {"x": X4, "edge_index": EI4, "y": torch.tensor([1.0]), "gid": "a", "smiles": ""}
    fast, ref = gd_graphset._make_data(attrs), Data(**attrs)
    assert fast.keys() == ref.keys() and fast.num_nodes == ref.num_nodes == 4
    assert all(fast[k] is ref[k] for k in attrs)


def test_no_groups_gives_group_minus_one(tmp_path):
    gs = load_graphs(write_manifest(tmp_path, "y,smiles\n1,CCO\n2,CCN\n"))
    assert [int(g.group) for g in gs.graphs] == [-1, -1]
    assert gs.table["id"].tolist() == ["0", "1"]  # default id: the row index


# ----------------------------------------------------------------- SMILES


def test_featurize_smiles_is_one_hot_of_from_smiles():
    g = featurize_smiles("CC(=O)Oc1ccccc1")
    ref = from_smiles("CC(=O)Oc1ccccc1")
    sizes = [len(v) for v in gd_featurize.x_map.values()]
    assert g.x.shape == (ref.num_nodes, sum(sizes)) == (ref.num_nodes, 177)
    assert g.x.dtype == torch.float32 and (g.x.sum(1) == len(sizes)).all()
    blocks = torch.split(g.x, sizes, dim=1)
    codes = torch.stack([b.argmax(1) for b in blocks], dim=1)
    assert torch.equal(codes, ref.x)  # oracle: PyG's integer categories
    e_blocks = torch.split(g.edge_attr, [len(v) for v in gd_featurize.e_map.values()], dim=1)
    assert torch.equal(torch.stack([b.argmax(1) for b in e_blocks], 1), ref.edge_attr)
    assert torch.equal(g.edge_index, ref.edge_index)


def test_featurize_smiles_invalid_returns_none_and_stays_quiet(capfd):
    assert featurize_smiles("C1CC(") is None
    assert featurize_smiles("not a smiles") is None
    assert capfd.readouterr().err == ""  # RDKit's parse errors are silenced


# ----------------------------------------------------------------- validation


def _row_case(y, path):
    return f"id,y,path\na,1.0,a.pt\nb,2.0,b.pt\nc,{y},{path}\n"


ROW_CASES = {
    "missing_file": _row_case("3", "nope.pt"),
    "unreadable_file": _row_case("3", "trunc.pt"),
    "unknown_extension": _row_case("3", "notes.txt"),
    "nan_target": _row_case("NaN", "a.pt"),
    "inf_target": _row_case("inf", "a.pt"),
    "non_numeric_target": _row_case("high", "a.pt"),
    "missing_target": _row_case("", "a.pt"),
    "empty_graph": _row_case("3", "no_nodes.pt"),
    "no_edges": _row_case("3", "no_edges.pt"),
    "edge_index_out_of_range": _row_case("3", "out_of_range.pt"),
    "non_integer_edge_index": _row_case("3", "float_edges.npz"),
    "feature_width_mismatch": _row_case("3", "wide.pt"),
    "nonfinite_features": _row_case("3", "nan_x.pt"),
    "nonfinite_edge_features": _row_case("3", "inf_edge.pt"),
    "path_outside_root": _row_case("3", "../a.pt"),
    "wrong_field_count": _row_case("3", "a.pt,extra"),
    "both_sources": "id,y,path,smiles\na,1,a.pt,\nb,2,b.pt,\nc,3,a.pt,CCO\n",
    "no_source": "id,y,path,smiles\na,1,a.pt,\nb,2,b.pt,\nc,3,,\n",
    "invalid_smiles": "id,y,smiles\na,1,CCO\nb,2,CCN\nc,3,C1CC(\n",
    "unsupported_molecule": "id,y,smiles\na,1,CCO\nb,2,CCN\nc,3,[C-6]C\n",  # charge -6
    "duplicate_id": "id,y,path\na,1,a.pt\nb,2,b.pt\na,3,a.pt\n",
    "unknown_split": "id,y,path,split\na,1,a.pt,train\nb,2,b.pt,test\nc,3,a.pt,valid\n",
    "missing_split": "id,y,path,split\na,1,a.pt,train\nb,2,b.pt,test\nc,3,a.pt,\n",
    "missing_group": "id,y,path,group\na,1,a.pt,q\nb,2,b.pt,q\nc,3,a.pt,\n",
}
GRAPH_FILE_CODES = {"missing_file", "unreadable_file", "empty_graph", "no_edges",
                    "edge_index_out_of_range", "non_integer_edge_index",
                    "feature_width_mismatch", "nonfinite_features", "nonfinite_edge_features"}


@pytest.mark.parametrize("code", sorted(ROW_CASES))
def test_each_problem_is_reported_with_line_id_file_and_fix(files, code):
    manifest = write_manifest(files, ROW_CASES[code])
    with pytest.raises(DataError) as err:
        load_graphs(manifest)
    problems = err.value.problems
    assert [p.code for p in problems] == [code], str(err.value)
    p = problems[0]
    assert (p.line, p.id) == (4, "a" if code == "duplicate_id" else "c")
    expected_file = "nope.pt trunc.pt no_nodes.pt no_edges.pt out_of_range.pt float_edges.npz " \
        "wide.pt nan_x.pt inf_edge.pt".split()
    if code in GRAPH_FILE_CODES:
        assert p.file in expected_file
    else:
        assert p.file == str(manifest)
    assert p.problem and p.fix and str(p.line) in str(err.value)
    # check_manifest reports the same problem without raising
    report = check_manifest(manifest)
    assert [q.code for q in report.problems] == [code] and not report.ok


FILE_CASES = {
    "corrupt.json": "unreadable_file",
    "garbage.graphml": "unreadable_file",
    "list.json": "bad_graph_content",
    "ragged.json": "bad_graph_content",
    "dup_nodes.json": "bad_graph_content",
    "dangling.json": "edge_index_out_of_range",
    "no_x.pt": "missing_features",
    "attrless.graphml": "missing_features",
    "transposed.pt": "bad_edge_index_shape",
    "edge_attr_rows.pt": "edge_attr_mismatch",
    "string.pt": "bad_graph_content",
}


@pytest.mark.parametrize("name", sorted(FILE_CASES))
def test_more_graph_file_problems(files, name):
    (files / "garbage.graphml").write_text("<graphml><node")
    (files / "list.json").write_text("[1, 2]")
    (files / "ragged.json").write_text(json.dumps({"x": [[1, 2], [3]], "edge_index": [[0], [1]]}))
    nodes = [{"id": 0, "q": 1}, {"id": 0, "q": 2}]
    (files / "dup_nodes.json").write_text(json.dumps({"nodes": nodes, "links": []}))
    nodes = [{"id": 0, "q": 1}, {"id": 1, "q": 2}]
    (files / "dangling.json").write_text(json.dumps(
        {"nodes": nodes, "links": [{"source": 0, "target": 7}]}))
    torch.save({"edge_index": EI4}, files / "no_x.pt")
    nx.write_graphml(nx.path_graph(3), files / "attrless.graphml")
    save_pt(files / "transposed.pt", edge_index=EI4.t().contiguous())
    save_pt(files / "edge_attr_rows.pt", edge_attr=torch.ones(5, 2))
    torch.save("just a string", files / "string.pt")
    with pytest.raises(DataError) as err:
        load_graphs(write_manifest(files, f"id,y,path\na,1,a.pt\nc,2,{name}\n"))
    assert [(p.code, p.line, p.id, p.file) for p in err.value.problems] == [
        (FILE_CASES[name], 3, "c", name)]


def test_problem_messages_name_the_specifics(files):
    manifest = write_manifest(files, "id,y,path\na,1,a.pt\nb,2,wide.pt\nc,3,b.pt\n"
                                     "d,4,out_of_range.pt\n")
    problems = {p.code: p for p in check_manifest(manifest).problems}
    width = problems["feature_width_mismatch"]
    assert "5 columns" in width.problem and "2 of 3 graphs have 3" in width.problem
    assert (width.line, width.id, width.file) == (3, "b", "wide.pt")
    assert "refers to node 12 but the graph has 4 nodes" in \
        problems["edge_index_out_of_range"].problem


def test_manifest_with_many_problems_reports_all_of_them_at_once(files):
    text = ("id,y,path,smiles,split\n"
            "a,1.0,a.pt,,train\n"
            "b,nan,b.pt,,train\n"
            "c,2.0,nope.pt,,val\n"
            "d,3.0,,C1CC(,test\n"
            "e,4.0,out_of_range.pt,,train\n"
            "a,5.0,b.pt,,training\n"
            "g,6.0,notes.txt,,train\n")
    with pytest.raises(DataError) as err:
        load_graphs(write_manifest(files, text))
    got = {(p.code, p.line) for p in err.value.problems}
    assert got == {("nan_target", 3), ("missing_file", 4), ("invalid_smiles", 5),
                   ("edge_index_out_of_range", 6), ("duplicate_id", 7), ("unknown_split", 7),
                   ("unknown_extension", 8)}
    text_table = str(err.value)
    assert text_table.startswith("7 problems in manifest")
    for code, _ in got:
        assert code in text_table
    assert "rename it to 'train'" in text_table and "fix:" in text_table


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


def test_singleton_group_is_a_warning_not_an_error(files, caplog):
    manifest = write_manifest(files, "id,y,path,group\na,1,a.pt,q1\nb,2,b.pt,q1\nc,3,a.pt,q2\n")
    report = check_manifest(manifest)
    assert [(p.code, p.line, p.id) for p in report.problems] == [("singleton_group", 4, "c")]
    assert report.ok and report.warnings and not report.errors
    with caplog.at_level(logging.WARNING, logger="gatrank.data"):
        gs = load_graphs(manifest)
    assert len(gs) == 3 and gs.dropped == []
    assert "single graph" in caplog.text


def test_unsafe_pt_file_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"x": Exploit(), "edge_index": EI4}, tmp_path / "evil.pt")
    with open(tmp_path / "evil_pickle.pt", "wb") as f:  # a raw pickle, not a torch zip file
        pickle.dump(Exploit(), f)
    with pytest.raises(UnsafeFileError, match="NOT loaded") as err:
        safe_torch_load(tmp_path / "evil.pt")
    assert str(tmp_path / "evil.pt") in str(err.value) and "allowlist" in str(err.value)
    manifest = write_manifest(tmp_path, "y,path\n1,evil.pt\n2,evil_pickle.pt\n")
    with pytest.raises(DataError) as err:
        load_graphs(manifest)
    assert [p.code for p in err.value.problems] == ["unsafe_file", "unsafe_file"]
    assert not marker.exists()


def test_npz_with_pickled_objects_is_refused(tmp_path):
    np.savez(tmp_path / "g.npz", x=np.array([{"a": 1}], dtype=object), edge_index=EI4.numpy())
    with pytest.raises(DataError) as err:
        load_graphs(write_manifest(tmp_path, "y,path\n1,g.npz\n"))
    assert err.value.problems[0].code == "unsafe_file"


def test_safe_torch_load_reads_pyg_data(tmp_path):
    save_pt(tmp_path / "g.pt", y=torch.tensor([1.0]))  # the allowlist covers torch.save(Data)
    d = safe_torch_load(tmp_path / "g.pt")
    assert isinstance(d, Data) and torch.equal(d.x, X4) and torch.equal(d.edge_index, EI4)


def test_data_error_pickles_with_its_problems():
    err = DataError([gd.DataProblem(2, "a", "m.csv", "bad", "fix it", "nan_target")], "m.csv")
    back = pickle.loads(pickle.dumps(err))
    assert back.problems == err.problems and str(back) == str(err)


# ----------------------------------------------------------------- robust reading


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


# ----------------------------------------------------------------- on_error="skip"


def test_skip_drops_exactly_the_bad_rows_and_records_them(files, caplog):
    text = ("id,y,path\n"
            "a,1,a.pt\n"
            "b,inf,b.pt\n"
            "c,3,b.pt\n"
            "d,4,nope.pt\n"
            "e,5,nan_x.pt\n"
            "f,6,a.pt\n")
    with caplog.at_level(logging.WARNING, logger="gatrank.data"):
        gs = load_graphs(write_manifest(files, text), on_error="skip")
    assert gs.table["id"].tolist() == ["a", "c", "f"]
    assert [int(g.idx) for g in gs.graphs] == [0, 1, 2]
    assert [float(g.y) for g in gs.graphs] == [1.0, 3.0, 6.0]
    assert [(p.line, p.id, p.code) for p in gs.dropped] == [
        (3, "b", "inf_target"), (5, "d", "missing_file"), (6, "e", "nonfinite_features")]
    assert "dropped 3 of 6" in caplog.text


def test_skip_with_nothing_left_raises(files):
    with pytest.raises(DataError) as err:
        load_graphs(write_manifest(files, "y,path\n1,nope.pt\n"), on_error="skip")
    assert [p.code for p in err.value.problems] == ["missing_file", "no_valid_graphs"]


def test_bad_on_error_value(files):
    with pytest.raises(ValueError, match="on_error"):
        load_graphs(write_manifest(files, "y,path\n1,a.pt\n"), on_error="ignore")


def test_subset_renumbers_idx_and_aligns_the_table(files):
    gs = load_graphs(write_manifest(files, "id,y,path\na,1,a.pt\nb,2,b.pt\nc,3,a.pt\n"))
    sub = gs.subset([2, 0])
    assert sub.table["id"].tolist() == ["c", "a"] and [int(g.idx) for g in sub.graphs] == [0, 1]
    assert [g.gid for g in sub.graphs] == ["c", "a"] and int(gs[2].idx) == 2
    with pytest.raises(IndexError):
        gs.subset([5])


# ----------------------------------------------------------------- cache


SMILES = ["CCO", "c1ccccc1O", "CC(=O)N", "C1CC(", "C", "CCCl"]


def test_second_load_hits_the_cache_with_identical_tensors(tmp_path, monkeypatch):
    manifest = write_manifest(tmp_path, "y,smiles\n" + "".join(
        f"{i},{s}\n" for i, s in enumerate(SMILES)))
    first = load_graphs(manifest, on_error="skip", cache_dir=tmp_path / "cache")
    assert [p.code for p in first.dropped] == ["invalid_smiles", "no_edges"]
    assert len(list((tmp_path / "cache" / "smiles").glob("*.pt"))) == 1

    def boom(*args, **kwargs):
        raise AssertionError("featurization ran although the cache holds these SMILES")

    monkeypatch.setattr(gd_featurize, "_featurize_codes", boom)
    second = load_graphs(manifest, on_error="skip", cache_dir=tmp_path / "cache")
    assert second.dropped == first.dropped
    for a, b in zip(first.graphs, second.graphs, strict=True):
        for key in ("x", "edge_index", "edge_attr", "y"):
            assert torch.equal(a[key], b[key])
        assert a.x.dtype == b.x.dtype == torch.float32


def test_corrupt_cache_is_recomputed(tmp_path, caplog):
    manifest = write_manifest(tmp_path, "y,smiles\n1,CCO\n2,CCN\n")
    load_graphs(manifest, cache_dir=tmp_path / "c")
    (cache_file,) = (tmp_path / "c" / "smiles").glob("*.pt")
    cache_file.write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING, logger="gatrank.data"):
        gs = load_graphs(manifest, cache_dir=tmp_path / "c")
    assert len(gs) == 2 and "ignoring unusable SMILES cache" in caplog.text
    assert safe_torch_load(cache_file)["errors"] == {}  # rewritten


def test_process_pool_gives_the_same_features(tmp_path, monkeypatch):
    monkeypatch.setattr(gd_featurize, "_POOL_MIN_MOLECULES", 2)
    serial = gd_featurize._pack(gd_featurize._featurize_codes(SMILES, 1))
    pooled = gd_featurize._pack(gd_featurize._featurize_codes(SMILES, 2))
    for key in ("x_codes", "edge_index", "e_codes", "num_nodes", "num_edges"):
        assert torch.equal(serial[key], pooled[key])
    assert serial["errors"].keys() == pooled["errors"].keys() == {3}
    assert serial["errors"][3][0] == pooled["errors"][3][0] == "invalid_smiles"


def test_cache_key_depends_on_the_smiles_list(tmp_path):
    a = gd_featurize._cache_file(["CCO", "CCN"], tmp_path)
    assert a == gd_featurize._cache_file(["CCO", "CCN"], tmp_path)
    assert a != gd_featurize._cache_file(["CCN", "CCO"], tmp_path)


def test_default_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("GATRANK_CACHE_DIR", str(tmp_path))
    assert gd.default_cache_dir() == tmp_path


# ----------------------------------------------------------------- splits


def _graphset(tmp_path, n, groups=None, splits=None):
    save_pt(tmp_path / "a.pt")
    cols = ["id", "y", "path"] + (["group"] if groups else []) + (["split"] if splits else [])
    rows = []
    for i in range(n):
        row = [f"g{i}", str(i), "a.pt"]
        row += [groups[i]] if groups else []
        row += [splits[i]] if splits else []
        rows.append(",".join(row))
    return load_graphs(write_manifest(tmp_path, ",".join(cols) + "\n" + "\n".join(rows) + "\n"))


def _check_partition(splits, n):
    flat = splits["train"] + splits["val"] + splits["test"]
    assert sorted(flat) == list(range(n))


def test_random_split_is_seeded_and_partitions(tmp_path):
    gs = _graphset(tmp_path, 50)
    a = split_indices(gs, seed=1)
    assert a == split_indices(gs, seed=1) and a != split_indices(gs, seed=2)
    _check_partition(a, 50)
    assert (len(a["train"]), len(a["val"]), len(a["test"])) == (40, 5, 5)
    b = split_indices(gs, seed=1, val_fraction=0.2, test_fraction=0.0)
    assert (len(b["val"]), len(b["test"])) == (10, 0)


def test_split_column_is_respected(tmp_path):
    labels = ["train", "val", "test", "train", "test"]
    s = split_indices(_graphset(tmp_path, 5, splits=labels), seed=0)
    assert s == {"train": [0, 3], "val": [1], "test": [2, 4]}


def test_groups_stay_together(tmp_path):
    groups = [f"q{i % 10}" for i in range(60)]
    gs = _graphset(tmp_path, 60, groups=groups)
    for seed in range(5):
        s = split_indices(gs, seed=seed, val_fraction=0.2, test_fraction=0.2)
        _check_partition(s, 60)
        owner = {}
        for name, idx in s.items():
            for i in idx:
                assert owner.setdefault(groups[i], name) == name
        assert s["train"] and s["val"] and s["test"]


def test_split_fraction_validation(tmp_path):
    gs = _graphset(tmp_path, 4)
    with pytest.raises(ValueError, match="sum to less than 1"):
        split_indices(gs, seed=0, val_fraction=0.5, test_fraction=0.5)
    tiny = split_indices(gs.subset([0]), seed=0)
    assert tiny == {"train": [0], "val": [], "test": []}


# ----------------------------------------------------------------- check report


def test_check_report_summary_against_brute_force(tmp_path):
    ys = [1.0, 1.0, 2.0, 2.0000001, 3.0, 1.0]
    groups = ["a", "a", "a", "b", "b", "b"]
    gs_text = "id,y,path,group,split\n" + "".join(
        f"g{i},{y},a.pt,{g},{'train' if i < 4 else 'test'}\n"
        for i, (y, g) in enumerate(zip(ys, groups, strict=True)))
    save_pt(tmp_path / "a.pt")
    report = check_manifest(write_manifest(tmp_path, gs_text))
    assert isinstance(report, CheckReport) and report.ok
    s = report.summary
    pairs = [(i, j) for i in range(6) for j in range(i + 1, 6) if groups[i] == groups[j]]
    ties = sum(abs(ys[i] - ys[j]) <= 1e-6 for i, j in pairs)
    assert s["tie_fraction"] == pytest.approx(ties / len(pairs))
    assert s["num_rows"] == s["num_graphs"] == 6 and s["num_features"] == 3
    assert s["nodes"] == {"min": 4.0, "mean": 4.0, "max": 4.0}
    assert s["y"]["std"] == pytest.approx(float(np.std(ys)))
    assert s["num_groups"] == 2 and s["splits"] == {"train": 4, "val": 0, "test": 2}
    json.dumps(report.to_dict())
    assert "tie_fraction" in report.format_table()


def test_check_report_lists_problems_and_summarizes_valid_rows(files):
    report = check_manifest(write_manifest(files, "id,y,path\na,1,a.pt\nb,2,nope.pt\n"))
    assert not report.ok and report.summary["num_rows"] == 2
    assert report.summary["num_graphs"] == 1 and report.summary["tie_fraction"] is None
    d = report.to_dict()
    assert d["problems"][0]["code"] == "missing_file" and d["problems"][0]["severity"] == "error"
    assert "missing_file" in report.format_table()


def test_fast_graph_construction_behaves_like_data():
    from gatrank.data.graphset import _make_data

    def attrs():
        return {"x": torch.rand(3, 4), "edge_index": torch.tensor([[0, 1], [1, 2]]),
                "y": torch.tensor([1.5]), "gid": "a", "smiles": "CCO"}

    a = attrs()
    fast, ref = _make_data(dict(a)), Data(**a)
    assert fast.keys() == ref.keys() and fast.num_nodes == ref.num_nodes == 3
    assert fast._store._parent() is fast  # the storage points back at its own graph
    other = _make_data(attrs())
    other.z = torch.zeros(1)  # attributes set later stay on their own graph
    assert "z" not in fast and "z" in other
    for name in ("x", "edge_index", "y"):
        assert torch.equal(fast[name], ref[name]) and torch.equal(fast.clone()[name], ref[name])
    b1, b2 = Batch.from_data_list([fast, other]), Batch.from_data_list([ref, Data(**attrs())])
    assert torch.equal(b1.batch, b2.batch) and torch.equal(b1.edge_index, b2.edge_index)
    assert b1.gid == b2.gid == ["a", "a"]
