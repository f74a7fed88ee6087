"""gatrank.data.graphset: load_graphs' invariants, collected validation and on_error="skip"."""

from __future__ import annotations

import logging

import pytest
import torch
from tiny_graphs import EI4, X4, save_pt, write_manifest
from torch_geometric.data import Batch, Data

import gatrank.data.graphset as gd_graphset
from gatrank.data import DataError, check_manifest, load_graphs


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


def test_fast_graph_construction_behaves_like_data():
    def attrs():
        return {"x": torch.rand(3, 4), "edge_index": torch.tensor([[0, 1], [1, 2]]),
                "y": torch.tensor([1.5]), "gid": "a", "smiles": "CCO"}

    a = attrs()
    fast, ref = gd_graphset._make_data(dict(a)), Data(**a)
    assert fast.keys() == ref.keys() and fast.num_nodes == ref.num_nodes == 3
    assert fast._store._parent() is fast  # the storage points back at its own graph
    other = gd_graphset._make_data(attrs())
    other.z = torch.zeros(1)  # attributes set later stay on their own graph
    assert "z" not in fast and "z" in other
    for name in ("x", "edge_index", "y"):
        assert torch.equal(fast[name], ref[name]) and torch.equal(fast.clone()[name], ref[name])
    b1, b2 = Batch.from_data_list([fast, other]), Batch.from_data_list([ref, Data(**attrs())])
    assert torch.equal(b1.batch, b2.batch) and torch.equal(b1.edge_index, b2.edge_index)
    assert b1.gid == b2.gid == ["a", "a"]


def test_no_groups_gives_group_minus_one(tmp_path):
    gs = load_graphs(write_manifest(tmp_path, "y,smiles\n1,CCO\n2,CCN\n"))
    assert [int(g.group) for g in gs.graphs] == [-1, -1]
    assert gs.table["id"].tolist() == ["0", "1"]  # default id: the row index


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
