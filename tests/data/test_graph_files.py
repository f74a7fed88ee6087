"""gatrank.data.graph_files: every loader round-trips, and broken graph files are named."""

from __future__ import annotations

import json

import networkx as nx
import numpy as np
import pytest
import torch
from tiny_graphs import EI4, X4, edge_set, save_pt, write_manifest

from gatrank.data import DataError, load_graphs


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


def test_npz_with_pickled_objects_is_refused(tmp_path):
    np.savez(tmp_path / "g.npz", x=np.array([{"a": 1}], dtype=object), edge_index=EI4.numpy())
    with pytest.raises(DataError) as err:
        load_graphs(write_manifest(tmp_path, "y,path\n1,g.npz\n"))
    assert err.value.problems[0].code == "unsafe_file"
