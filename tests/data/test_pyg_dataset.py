"""gatrank.data.pyg_dataset: a user's PyG dataset (an import string or a .pt file) becomes the
GraphSet a manifest gives, with the same checks, every problem named by index and id."""

from __future__ import annotations

import math
import pickle

import pandas as pd
import pytest
import torch
from custom_plugins import HandMadeDataset, hand_made_graphs
from torch_geometric.data import Data, InMemoryDataset

from gatrank.cli import main
from gatrank.data import DataError, check_dataset, load_dataset, load_graphs, split_indices
from gatrank.datasets import default_manifest
from tools.failure_modes import MARKER


@pytest.fixture
def saved(tmp_path):
    """``saved(graphs)``: the spec of a .pt file holding the list ``graphs``."""
    def save(graphs: list) -> str:
        path = tmp_path / "graphs.pt"
        torch.save(graphs, path)
        return str(path)

    return save


SOURCES = ["custom_plugins:HandMadeDataset", "custom_plugins:hand_made_dataset",
           "custom_plugins:hand_made_list", "custom_plugins:hand_made_graphs"]
"""An InMemoryDataset class (called), a dataset instance, a list of Data, a function."""


def _same_graphs(gs, graphs: list[Data]) -> None:
    """``gs`` holds ``graphs`` in order: the same tensors, targets and ids."""
    assert len(gs) == len(graphs)
    for i, (g, want) in enumerate(zip(gs.graphs, graphs, strict=True)):
        assert torch.equal(g.x, want.x) and torch.equal(g.edge_index, want.edge_index), i
        assert g.y.tolist() == want.y.view(-1).tolist() and g.gid == want.id
    assert gs.table["id"].tolist() == [g.id for g in graphs]


@pytest.mark.parametrize("spec", SOURCES)
def test_every_kind_of_import_string_gives_the_graphs(spec):
    gs = load_dataset(spec)
    _same_graphs(gs, hand_made_graphs())
    assert gs.dataset == spec and gs.manifest is None and gs.source == f"dataset {spec}"
    assert gs.num_features == 2 and gs.table["index"].tolist() == list(range(6))
    # the GraphSet contract: float32 x, y [1], no group (-1), idx = position
    g = gs[4]
    assert g.x.dtype == torch.float32 and g.y.shape == (1,) and g.y.dtype == torch.float32
    assert g.group.tolist() == [-1] and g.idx.tolist() == [4]
    assert check_dataset(spec).ok


def test_a_datasets_transform_applies_and_a_failing_get_names_the_graph():
    gs = load_dataset("custom_plugins:ScaledGraphs")
    assert all(torch.equal(g.x, want.x * 10) for g, want in zip(gs.graphs, hand_made_graphs(),
                                                                strict=True))
    report = check_dataset("custom_plugins:scaled_with_a_broken_graph")
    assert [p.code for p in report.problems] == ["dataset_error"]
    assert "reading graph 3 raised OSError: graph file 3 is truncated" in \
        report.problems[0].problem


def test_pt_file_of_a_list_of_data(tmp_path):
    torch.save(hand_made_graphs(), tmp_path / "graphs.pt")
    _same_graphs(load_dataset(str(tmp_path / "graphs.pt")), hand_made_graphs())


def test_in_memory_dataset_processed_files_new_and_old_form(tmp_path):
    InMemoryDataset.save(hand_made_graphs(), str(tmp_path / "new.pt"))  # (dict, slices, Data)
    ds = HandMadeDataset()
    torch.save((ds._data, ds.slices), tmp_path / "old.pt")  # PyG < 2.4: (Data, slices)
    for name in ("new.pt", "old.pt"):
        _same_graphs(load_dataset(str(tmp_path / name)), hand_made_graphs())


def test_a_dataset_and_a_manifest_of_the_same_graphs_give_the_same_graphset(tmp_path):
    """The oracle: graphs saved as files behind a manifest load exactly as the dataset does."""
    graphs = hand_made_graphs(8)
    rows = []
    for i, g in enumerate(graphs):
        g.group, g.split = f"q{i % 2}", "test" if i >= 6 else "train"
        torch.save(Data(x=g.x, edge_index=g.edge_index), tmp_path / f"{g.id}.pt")
        rows.append(f"{g.id},{float(g.y)},{g.id}.pt,{g.group},{g.split}")
    (tmp_path / "m.csv").write_text("\n".join(["id,y,path,group,split", *rows]) + "\n")
    torch.save(graphs, tmp_path / "ds.pt")
    a, b = load_graphs(tmp_path / "m.csv"), load_dataset(str(tmp_path / "ds.pt"))
    for ga, gb in zip(a.graphs, b.graphs, strict=True):
        assert set(ga.keys()) == set(gb.keys())
        for key in ga.keys():
            va, vb = ga[key], gb[key]
            assert torch.equal(va, vb) if isinstance(va, torch.Tensor) else va == vb, key
    cols = ["id", "y", "split", "group", "num_nodes", "num_edges"]
    assert a.table[cols].equals(b.table[cols])
    assert split_indices(a, seed=0) == split_indices(b, seed=0)


def test_embedded_molecules_as_a_dataset_equal_their_manifest(tmp_path):
    """A user's InMemoryDataset featurized with gatrank's featurizer gives the graphs the
    manifest of the same molecules gives."""
    table = pd.read_csv(default_manifest(), dtype={"id": str}).head(12)
    table.to_csv(tmp_path / "m.csv", index=False)
    a, b = load_graphs(tmp_path / "m.csv"), load_dataset("custom_plugins:EmbeddedMolecules")
    for ga, gb in zip(a.graphs, b.graphs[:12], strict=True):
        for key in ("x", "edge_index", "edge_attr", "y"):
            assert torch.equal(ga[key], gb[key]), key
        assert (ga.gid, ga.smiles) == (gb.gid, gb.smiles)


def _bad_graphs() -> list:
    ok = hand_made_graphs(8)
    nan_x = ok[5].x.clone()
    nan_x[1, 0] = math.nan
    ok[2].y = None  # missing y
    ok[3].y = torch.tensor([1.0, 2.0])  # two targets
    ok[4].id = "g0"  # duplicate id
    ok[5].x = nan_x
    ok[6].x = ok[6].x.long()  # integer features
    ok[7].edge_index = torch.tensor([[0, 9], [9, 0]])  # node 9 of 3
    return ok + ["not a graph"]


def test_bad_graphs_are_all_reported_at_once_by_index_and_id(saved):
    report = check_dataset(saved(_bad_graphs()))
    found = {(p.index, p.id, p.code) for p in report.errors}
    assert found == {(2, "g2", "missing_target"), (3, "g3", "target_shape"),
                     (4, "g0", "duplicate_id"), (5, "g5", "nonfinite_features"),
                     (6, "g6", "integer_features"), (7, "g7", "edge_index_out_of_range"),
                     (8, "8", "not_a_graph")}
    assert all(p.line is None and p.per_graph for p in report.errors)
    by_code = {p.code: p for p in report.errors}
    assert "2 values" in by_code["target_shape"].problem
    assert "graph 0" in by_code["duplicate_id"].problem
    fix = by_code["integer_features"].fix
    assert "data.x = data.x.float()" in fix and "featurize_smiles" in fix
    assert "torch.int64" in by_code["integer_features"].problem
    assert report.summary["num_rows"] == 9 and report.summary["num_graphs"] == 2
    table = report.format_table()
    assert table.splitlines()[1].split()[:2] == ["index", "id"]


def test_load_raises_every_problem_or_skips_the_bad_graphs(tmp_path):
    torch.save(_bad_graphs(), tmp_path / "bad.pt")
    with pytest.raises(DataError) as err:
        load_dataset(str(tmp_path / "bad.pt"))
    assert len(err.value.problems) == 7 and f"in dataset {tmp_path / 'bad.pt'}" in str(err.value)
    assert 'on_error="skip"' in str(err.value)
    gs = load_dataset(str(tmp_path / "bad.pt"), on_error="skip")
    assert gs.table["id"].tolist() == ["g0", "g1"] and gs.table["index"].tolist() == [0, 1]
    assert sorted(p.index for p in gs.dropped) == [2, 3, 4, 5, 6, 7, 8]


def test_from_smiles_integer_features_are_named_never_cast(saved):
    from torch_geometric.utils import from_smiles

    graphs = []
    for i, smi in enumerate(["CCO", "CCN", "c1ccccc1", "CC(=O)O"]):
        g = from_smiles(smi)
        g.y = torch.tensor([float(i)])
        graphs.append(g)
    report = check_dataset(saved(graphs))
    codes = sorted({p.code for p in report.errors})
    assert codes == ["integer_edge_features", "integer_features"]
    assert {p.index for p in report.errors} == {0, 1, 2, 3}
    assert all(p.id == str(p.index) for p in report.errors)  # no id attribute: the position
    with pytest.raises(DataError):
        load_dataset(saved(graphs), on_error="skip")  # nothing left: no graph was cast
    assert "data.edge_attr = data.edge_attr.float()" in next(
        p.fix for p in report.errors if p.code == "integer_edge_features")


def test_groups_splits_and_ids_play_the_manifest_columns(saved):
    graphs = hand_made_graphs(6)
    for i, g in enumerate(graphs):
        del g.id
        g.name = f"mol{i}"  # `name` when there is no `id`
        g.group = torch.tensor([i % 2])
        g.split = "Train" if i < 4 else "test"
    gs = load_dataset(saved(graphs))
    assert gs.table["id"].tolist() == [f"mol{i}" for i in range(6)]
    assert gs.table["split"].tolist() == ["train"] * 4 + ["test"] * 2
    assert gs.table["group"].tolist() == ["0", "1"] * 3
    assert [int(g.group) for g in gs.graphs] == [0, 1] * 3
    assert split_indices(gs, seed=0)["test"] == [4, 5]
    # gatrank's own -1 "no group" round-trips as no group
    graphs[0].group, graphs[1].split = torch.tensor([-1]), "training"
    del graphs[2].split
    problems = {(p.index, p.code) for p in check_dataset(saved(graphs)).problems}
    assert problems == {(0, "missing_group"), (1, "unknown_split"), (2, "missing_split")}


@pytest.mark.parametrize(("spec", "code", "words"), [
    ("no_such_module:ds", "dataset_not_found", "cannot import module 'no_such_module'"),
    ("custom_plugins:nothing_here", "dataset_not_found", "no attribute 'nothing_here'"),
    ("math:pi", "not_a_dataset", "gives a float"),
    ("custom_plugins:broken_dataset", "dataset_error", "download folder is missing"),
    ("missing.pt", "dataset_not_found", "does not exist"),
])
def test_a_dataset_that_cannot_be_read_is_one_clear_problem(spec, code, words):
    report = check_dataset(spec)
    assert [p.code for p in report.problems] == [code] and not report.ok
    assert words in report.problems[0].problem and report.problems[0].fix
    with pytest.raises(DataError, match=code):
        load_dataset(spec, on_error="skip")  # nothing to skip: always raised


def test_the_users_exception_stays_the_cause():
    with pytest.raises(DataError) as err:
        load_dataset("custom_plugins:broken_dataset")
    assert isinstance(err.value.__cause__, RuntimeError)


def test_empty_and_corrupt_files(tmp_path):
    torch.save([], tmp_path / "empty.pt")
    (tmp_path / "corrupt.pt").write_bytes(b"PK\x03\x04 not really a zip")
    torch.save({"x": torch.ones(2)}, tmp_path / "dict.pt")
    codes = [check_dataset(str(tmp_path / n)).problems[0].code
             for n in ("empty.pt", "corrupt.pt", "dict.pt")]
    assert codes == ["empty_dataset", "unreadable_file", "not_a_dataset"]


class _Payload:
    """Unpickling this creates the marker file (a stand-in for any code an attacker wants)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('payload ran')",))


def test_a_pt_holding_pickled_code_is_refused_and_never_run(tmp_path, capsys):
    marker = tmp_path / MARKER
    evil, raw = tmp_path / "evil.pt", tmp_path / "raw.pt"
    torch.save([*hand_made_graphs(2), _Payload(marker)], evil)
    raw.write_bytes(pickle.dumps([_Payload(marker)]))
    # positive controls: the payloads do run when loaded the unsafe way
    torch.load(evil, weights_only=False)
    assert marker.exists()
    marker.unlink()
    pickle.loads(raw.read_bytes())  # noqa: S301 - the point of the control
    assert marker.exists()
    marker.unlink()
    for path in (evil, raw):
        report = check_dataset(str(path))
        assert [p.code for p in report.problems] == ["unsafe_file"]
        assert "NOT loaded" in report.problems[0].problem
        with pytest.raises(DataError, match="unsafe_file"):
            load_dataset(str(path))
        assert main(["check-data", "--dataset", str(path)]) == 1
    assert "unsafe_file" in capsys.readouterr().out
    assert not marker.exists()
