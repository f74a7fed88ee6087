"""gatrank in a notebook of the user's own (gatrank.api): graphs and models as objects, every
result rendered, bad input named."""

from __future__ import annotations

import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import papermill
import pytest
import torch
from torch import nn
from torch_geometric.data import Data, InMemoryDataset
from torch_geometric.loader import DataLoader
from torch_geometric.nn import GATConv, global_add_pool

import gatrank
from gatrank.config import ConfigError
from gatrank.data import DataError, load_graphs
from gatrank.datasets import default_manifest
from gatrank.doctor import DoctorOptions

QUICK = DoctorOptions(ablations=False, heldout=False, verify=False, overfit_epochs=60)


class Cells(HTMLParser):
    """The text of every table cell (td/th) of an HTML fragment, in order."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.cells: list[str] = []
        self.tables = 0
        self._cell: list[str] | None = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables += 1
        if tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.cells.append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


@pytest.fixture(scope="module")
def molecules() -> list[Data]:
    """The embedded molecules' first 64 graphs, as a plain list of PyG Data."""
    gs = load_graphs(default_manifest())
    return [Data(x=g.x, edge_index=g.edge_index, edge_attr=g.edge_attr, y=g.y)
            for g in gs.graphs[:64]]


class GAT(nn.Module):
    """A user's model, PyG style: forward(x, edge_index, batch)."""

    def __init__(self, in_channels: int, hidden: int = 32, norm_head: bool = False) -> None:
        super().__init__()
        self.conv = GATConv(in_channels, hidden, heads=2, concat=False)
        self.head = nn.Sequential(nn.Linear(hidden, 1), *([nn.LayerNorm(1)] if norm_head else []))

    def forward(self, x, edge_index, batch):
        return self.head(global_add_pool(self.conv(x, edge_index).relu(), batch)).squeeze(-1)


class Molecules(InMemoryDataset):
    """A PyG InMemoryDataset held in memory (no root folder)."""

    def __init__(self, graphs: list[Data]) -> None:
        super().__init__(root=None)
        self.data, self.slices = self.collate(graphs)


def _broken(molecules: list[Data]) -> list[Data]:
    graphs = [g.clone() for g in molecules[:12]]
    graphs[5].x[2, 0] = float("nan")
    graphs[7].edge_index = torch.empty(2, 0, dtype=torch.long)
    graphs[7].edge_attr = torch.empty(0, graphs[7].edge_attr.shape[1])
    return graphs


# --------------------------------------------------------------------------- check_data


def test_check_data_names_the_nan_graph_and_the_edgeless_graph_in_text_and_html(molecules):
    report = gatrank.check_data(_broken(molecules))
    assert not report.ok
    assert [(p.index, p.code) for p in report.errors] == [(5, "nonfinite_features"),
                                                            (7, "no_edges")]
    text = report.format_table()
    assert "nonfinite_features" in text and "no_edges" in text
    html = report._repr_html_()
    cells = Cells(html).cells
    assert {"nonfinite_features", "no_edges"} <= set(cells)
    assert "5" in cells and "7" in cells
    assert "CheckReport(" not in html
    assert report.summary["num_rows"] == 12 and report.summary["num_graphs"] == 10


def test_check_data_takes_a_dataset_a_loader_a_batch_and_a_tuple(molecules):
    graphs = _broken(molecules)
    for data in (Molecules(graphs), DataLoader(graphs, batch_size=4), tuple(graphs)):
        report = gatrank.check_data(data)
        assert [p.index for p in report.errors] == [5, 7], type(data).__name__
    clean = gatrank.check_data(Molecules(molecules[:10]))
    assert clean.ok and clean.summary["num_graphs"] == 10
    assert clean.summary["dataset"] == "<Molecules of 10 graphs>"


def test_graphs_without_y_with_several_ys_or_integer_features_are_named_with_the_fix(molecules):
    graphs = [g.clone() for g in molecules[:6]]
    del graphs[1].y
    graphs[2].y = torch.tensor([1.0, 2.0])
    graphs[4].x = graphs[4].x.long()
    report = gatrank.check_data(graphs)
    found = {(p.index, p.code): p.fix for p in report.errors}
    assert set(found) == {(1, "missing_target"), (2, "target_shape"), (4, "integer_features")}
    assert "data.y = torch.tensor([value])" in found[(1, "missing_target")]
    assert "data.y = data.y[:, 0]" in found[(2, "target_shape")]
    assert "data.x = data.x.float()" in found[(4, "integer_features")]


def test_an_item_that_is_not_a_graph_is_named_by_its_index_and_nothing_is_dropped(molecules):
    report = gatrank.check_data([*molecules[:3], "oops", molecules[3]])
    assert [(p.index, p.code) for p in report.problems] == [(3, "not_a_graph")]
    assert "item is a str" in report.problems[0].problem
    assert report.summary["num_rows"] == 5 and report.summary["num_graphs"] == 4


@pytest.mark.parametrize("bad, says", [
    (None, None),  # placeholder replaced below: a single Data
    ({"x": 1}, "from a dict."),
    (iter([]), "(it has no length): pass list(...) of it"),
    (3, "from an int."),
])
def test_what_gatrank_cannot_read_is_a_type_error_naming_the_type_and_what_it_reads(
        molecules, bad, says):
    if bad is None:
        bad, says = molecules[0], "from a Data (one graph): pass a list of graphs"
    with pytest.raises(TypeError) as err:
        gatrank.check_data(bad)
    assert says in str(err.value)
    assert "a list or tuple of torch_geometric.data.Data, a PyG Dataset" in str(err.value)


def test_a_model_or_loss_gatrank_cannot_use_is_a_type_error(molecules):
    with pytest.raises(TypeError, match="model must be a torch.nn.Module instance.*not a int"):
        gatrank.overfit_test(3, molecules)
    with pytest.raises(TypeError, match="loss must be a callable.*not a float"):
        gatrank.diagnose(None, molecules, loss=0.5)


def test_the_doctors_dataset_argument_points_graphs_in_memory_to_graphs(molecules):
    from gatrank.doctor import diagnose

    with pytest.raises(TypeError, match=r"pass graphs held in memory as graphs=\.\.\."):
        diagnose(dataset=molecules[:8], options=QUICK)


def test_overfit_test_on_graphs_with_problems_raises_every_problem_by_index(molecules):
    with pytest.raises(DataError) as err:
        gatrank.overfit_test(None, _broken(molecules), n=8, epochs=2, progress=False)
    assert [(p.index, p.code) for p in err.value.problems] == [(5, "nonfinite_features"),
                                                                (7, "no_edges")]


def test_import_gatrank_stays_light_and_exports_the_api_lazily():
    code = ("import sys, gatrank; light = 'torch' not in sys.modules; "
            "print(light, gatrank.check_data.__module__, gatrank.overfit_test.__module__, "
            "gatrank.diagnose.__module__)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.stdout.split() == ["True"] + ["gatrank.api"] * 3, res.stderr
    assert {"check_data", "overfit_test", "diagnose"} <= set(dir(gatrank))


# --------------------------------------------------------------------------- training


@pytest.mark.slow
def test_overfit_test_passes_on_the_molecules_and_leaves_the_instance_bitwise_unchanged(
        molecules):
    torch.manual_seed(0)
    model = GAT(molecules[0].num_features)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = gatrank.overfit_test(model, molecules, n=32, progress=False, stop_at_verdict=True)
    assert result.passed, str(result)
    assert result.n == 32 and result.source == "<list of 64 graphs>"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert result.model is not model
    assert not any(torch.equal(a, b) for a, b in zip(
        model.state_dict().values(), result.model.state_dict().values(), strict=True)
        if a.numel() > 1)
    html = result._repr_html_()
    cells = Cells(html).cells
    assert "PASS" in html and "<svg" in html
    assert any("pairwise accuracy > 0.9" in c for c in cells)
    assert str(result).startswith("overfit test: first 32 graphs of <list of 64 graphs>")


@pytest.mark.slow
def test_a_dataset_and_a_loader_are_accepted_by_overfit_test_and_diagnose(molecules):
    dataset = Molecules(molecules[:24])
    result = gatrank.overfit_test(GAT, DataLoader(dataset, batch_size=8), n=16, epochs=20,
                                  progress=False)
    assert len(result.history) == 3 and result.source == "<Molecules of 24 graphs>"
    report = gatrank.diagnose(GAT, dataset, options=QUICK)
    assert report.setup["source"] == "<Molecules of 24 graphs>"
    assert report.setup["graphs"] == 24
    report = gatrank.diagnose(None, DataLoader(dataset, batch_size=8), options=QUICK)
    assert report.setup["graphs"] == 24


@pytest.mark.slow
def test_diagnose_names_a_layernorm_1_head_and_its_module_in_html(molecules):
    torch.manual_seed(0)
    model = GAT(molecules[0].num_features, norm_head=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = gatrank.diagnose(model, molecules, options=DoctorOptions(heldout=False))
    assert report.cause_ids[0] == "constant_output_layer"
    html = report._repr_html_()
    cells = Cells(html).cells  # the causes table's header ends in "fix", then rank 1's cells
    assert cells[cells.index("fix") + 2].startswith("constant_output_layer")
    assert "head.1" in html and "LayerNorm(1)" in html
    assert "DoctorReport(" not in html
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_diagnose_on_the_broken_list_stops_at_the_data_naming_both_graphs(molecules):
    report = gatrank.diagnose(None, _broken(molecules), options=QUICK)
    assert report.verdict == "bad_data"
    assert report.cause_ids == ["nan_or_inf_inputs", "empty_graphs"]
    assert "(index 5)" in report.causes[0].evidence
    assert "(index 7)" in report.causes[1].evidence
    assert report.setup["source"] == "<list of 12 graphs>"


# --------------------------------------------------------------------------- the worked example


EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "in_your_notebook.ipynb"


def test_the_example_notebook_is_stored_without_outputs_and_makes_the_three_calls():
    nb = nbformat.read(EXAMPLE, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    source = "\n".join(c.source for c in code)
    for call in ("gatrank.check_data(graphs)", "gatrank.overfit_test(model, graphs",
                 "gatrank.diagnose(model, graphs)", "class RankGAT(nn.Module)"):
        assert call in source, call


@pytest.mark.slow
def test_the_example_notebook_runs_and_shows_each_result_as_html(tmp_path):
    out = tmp_path / "out.ipynb"
    papermill.execute_notebook(str(EXAMPLE), str(out), cwd=str(tmp_path), kernel_name="python3",
                               progress_bar=False)
    shown = [o["data"] for c in nbformat.read(out, as_version=4).cells if c.cell_type == "code"
             for o in c.outputs if o.get("output_type") == "execute_result"]
    html = [d["text/html"] for d in shown if "text/html" in d]
    assert len(html) == 6  # three data checks, two overfit tests, the doctor
    assert not any(r in d.get("text/plain", "") for d in shown
                   for r in ("CheckReport(", "OverfitResult(", "DoctorReport("))
    checks, raw, broken, failed, doctor, fixed = html
    assert "no problems found" in checks and "integer_features" in raw
    rows = Cells(broken).cells  # severity, index, id, code, problem, fix
    assert rows[rows.index("nonfinite_features") - 2] == "5"
    assert rows[rows.index("no_edges") - 2] == "7"
    text = [d["text/plain"] for d in shown if "2 error(s), 0 warning(s)" in d["text/plain"]]
    assert len(text) == 1 and "nonfinite_features" in text[0] and "no_edges" in text[0]
    assert "verdict: FAIL" in failed and "verdict: PASS" in fixed
    cells = Cells(doctor).cells
    assert cells[cells.index("fix") + 2].startswith("constant_output_layer")
    assert "Verified" in doctor and "score.1" in doctor


class Named(nn.Module):
    """A user's class whose first argument is not in_channels (PyG's own models' style)."""

    def __init__(self, hidden_channels: int, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = GATConv(in_channels, hidden_channels)
        self.out = nn.Linear(hidden_channels, out_channels)

    def forward(self, x, edge_index, batch):
        return self.out(global_add_pool(self.conv(x, edge_index).relu(), batch))


def test_a_class_passed_to_the_doctor_gets_its_arguments_by_name(molecules):
    with pytest.raises(ConfigError, match=r"model Named: Named\(hidden_channels.*needs "
                                          r"hidden_channels\. Pass hidden_channels in"):
        gatrank.diagnose(Named, molecules[:16], options=QUICK)
    report = gatrank.diagnose(Named, molecules[:16], options=QUICK,
                              config={"model": {"kwargs": {"hidden_channels": 8}}})
    assert "user_code_error" not in report.cause_ids
    assert [s.name for s in report.stages][:4] == ["data", "loss", "model", "overfit"]


def test_paths_and_import_strings_are_read_as_the_cli_reads_them(molecules, tmp_path,
                                                                   monkeypatch):
    torch.save(_broken(molecules), tmp_path / "graphs.pt")
    from_file = gatrank.check_data(tmp_path / "graphs.pt")
    assert [p.index for p in from_file.errors] == [5, 7]
    assert from_file.summary["dataset"] == str(tmp_path / "graphs.pt")
    (tmp_path / "mine.py").write_text(
        "import torch\ngraphs = torch.load(__file__.replace('mine.py', 'graphs.pt'), "
        "weights_only=False)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert [p.index for p in gatrank.check_data("mine:graphs").errors] == [5, 7]
    manifest = gatrank.check_data(default_manifest().parent)  # its folder
    assert manifest.ok and manifest.summary["num_graphs"] == 1017
    with pytest.raises(FileNotFoundError, match="names no file and is not an import string"):
        gatrank.check_data("no_such_graphs")
    with pytest.raises(FileNotFoundError, match="a folder without a manifest.csv"):
        gatrank.check_data(tmp_path)
