"""The doctor's data stage on real-looking data: a few rows the model survives (single-atom
molecules, an unparseable SMILES, an edgeless graph in memory) are left out with a warning and
the diagnosis goes on; NaN/Inf and problems on more than 5% of the rows still stop it; targets
in raw units under a loss that is not scale-invariant are named ``unscaled_targets``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from custom_plugins import SumModel
from torch import nn
from torch_geometric.data import Data
from torch_geometric.nn import GATConv, global_mean_pool

from gatrank.config import Config, DataConfig
from gatrank.data import GraphSet, load_graphs
from gatrank.datasets import check_data, write_dataset
from gatrank.doctor import DoctorOptions, diagnose
from gatrank.doctor.data_stage import TOLERABLE_FRACTION, data_stage
from gatrank.doctor.pyg_examples import listnet_loss
from gatrank.doctor.state import Diagnosis
from gatrank.model import GATRanker, LinearBaseline, adds_self_loops

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = DoctorOptions(n=16, overfit_epochs=60, user_epochs=5, heldout=False, ablations=False)
"""Small budgets: these tests are about the data stage and that the stages after it run."""

BAD_ROWS = [("methane", "C"), ("ammonia", "N"), ("hydrogen_sulfide", "S"),
            ("broken", "C1CC(")]
"""Three molecules without bonds and one SMILES RDKit cannot parse."""


@pytest.fixture(scope="module")
def molecules(tmp_path_factory) -> pd.DataFrame:
    """96 molecules of the embedded chembl-activity data (id, smiles, y = pIC50)."""
    return pd.read_csv(write_dataset("chembl-activity", tmp_path_factory.mktemp("mols"), n=96))


def _manifest(root: Path, good: pd.DataFrame, bad: list[tuple[str, str]] = BAD_ROWS,
              **y_of: float) -> Path:
    rows = pd.DataFrame({"id": [i for i, _ in bad], "smiles": [s for _, s in bad],
                         "y": [y_of.get(i, 5.0 + k) for k, (i, _) in enumerate(bad)]})
    path = root / "manifest.csv"
    pd.concat([good, rows], ignore_index=True).to_csv(path, index=False)
    return path


def _stage(report, name: str = "data"):
    return next(s for s in report.stages if s.name == name)


# --------------------------------------------------------------------------- bad rows


def test_a_few_bad_rows_are_left_out_and_the_diagnosis_goes_on(tmp_path, molecules,
                                                                check_report):
    manifest = _manifest(tmp_path, molecules)  # 4 bad rows of 100: 4%
    # the user's settings get their usual 60 epochs: the verdict is the whole doctor's
    report = diagnose(manifest=manifest, options=DoctorOptions(n=16, overfit_epochs=60,
                                                               heldout=False, ablations=False))
    check_report(report)
    assert report.verdict == "healthy", report.format_text()
    names = [s.name for s in report.stages]
    assert names[:4] == ["data", "loss", "model", "overfit"]
    data = _stage(report)
    assert data.status == "warning"
    assert (data.summary["graphs"], data.summary["rows"], data.summary["dropped_rows"]) == \
        (96, 100, 4)
    assert data.summary["dropped_codes"] == {"invalid_smiles": 1, "no_edges": 3}
    note = report.notes[0]
    assert "4 of 100 rows (4.0%)" in note
    for line, (gid, _) in enumerate(BAD_ROWS, start=98):  # header = line 1
        assert f"{gid} (line {line})" in note
    # check-data still lists every such row, and the note carries its fix texts
    listed = check_data(DataConfig(manifest=str(manifest))).errors
    assert sorted(p.id for p in listed) == sorted(gid for gid, _ in BAD_ROWS)
    assert all(p.fix in note for p in listed)


def test_the_same_rows_over_the_tolerable_fraction_still_stop(tmp_path, molecules,
                                                              check_report):
    good = molecules.iloc[:30]  # 4 bad rows of 34: 11.8%
    assert 4 / 34 > TOLERABLE_FRACTION
    report = diagnose(manifest=_manifest(tmp_path, good), options=FAST)
    check_report(report)
    assert report.verdict == "bad_data"
    assert set(report.cause_ids) == {"empty_graphs", "invalid_data"}
    assert [s.name for s in report.stages] == ["data"]
    empty = next(c for c in report.causes if c.id == "empty_graphs")
    assert "methane" in empty.evidence and "hydrogen_sulfide" in empty.evidence
    assert any("4 rows have problems" in n and "more than the 5%" in n for n in report.notes)


def test_a_nan_target_stops_the_diagnosis_on_one_row(tmp_path, molecules, check_report):
    manifest = _manifest(tmp_path, molecules, [("unmeasured", "CCO")], unmeasured=np.nan)
    report = diagnose(manifest=manifest, options=FAST)  # 1 row of 97
    check_report(report)
    assert (report.verdict, report.cause_ids) == ("bad_data", ["nan_or_inf_inputs"])
    assert "unmeasured" in report.causes[0].evidence
    assert [s.name for s in report.stages] == ["data"]


def test_the_zoos_broken_rows_still_stop_with_their_causes(zoo_set):
    """The zoo breaks every 8th graph (12.5%): over the fraction, and NaN always stops."""
    for fault, cause in (("empty_graphs", "empty_graphs"), ("nan_features", "nan_or_inf_inputs")):
        report = diagnose(zoo_set, inject=fault, options=FAST)
        assert (report.verdict, report.cause_ids) == ("bad_data", [cause])


# --------------------------------------------------------------------------- graphs in memory


def _path_graph(n: int, gen: torch.Generator, edges: bool = True) -> Data:
    src = torch.arange(n - 1)
    ei = torch.cat([torch.stack([src, src + 1]), torch.stack([src + 1, src])], 1)
    x = torch.randn(n, 3, generator=gen)
    return Data(x=x, edge_index=ei if edges else ei[:, :0], y=x.sum().reshape(1))


def _graph_set(k: int = 40, edgeless: tuple[int, ...] = (7,)) -> GraphSet:
    """``k`` path graphs whose target is the sum of their node features; the graphs at
    ``edgeless`` have no edges."""
    gen = torch.Generator().manual_seed(0)
    graphs = [_path_graph(3 + i % 5, gen, edges=i not in edgeless) for i in range(k)]
    for i, g in enumerate(graphs):
        g.group, g.idx, g.gid, g.smiles = torch.tensor([-1]), torch.tensor([i]), f"g{i}", ""
    table = pd.DataFrame({"id": [g.gid for g in graphs],
                          "y": [float(g.y) for g in graphs], "split": None, "group": None})
    return GraphSet(graphs, table, 3, Path("manifest.csv"))


class GATWithoutSelfLoops(nn.Module):
    """A user's GAT whose layer adds no self-loops: a node without edges gets only the bias."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.conv = GATConv(in_channels, 8, add_self_loops=False)
        self.out = nn.Linear(8, 1)

    def forward(self, batch) -> torch.Tensor:
        h = self.conv(batch.x, batch.edge_index).relu()
        return self.out(global_mean_pool(h, batch.batch, batch.num_graphs)).squeeze(-1)


def test_adds_self_loops_reads_every_message_passing_layer():
    assert adds_self_loops(GATRanker(3))
    assert not adds_self_loops(GATWithoutSelfLoops(3))
    assert not adds_self_loops(SumModel(3)) and not adds_self_loops(LinearBaseline(3))


@pytest.mark.parametrize("model", [None, SumModel])
def test_an_edgeless_graph_in_memory_is_left_out_for_a_model_that_survives_it(model):
    """gatrank's GAT adds self-loops; an MLP over pooled features passes no messages: either
    scores a graph without edges from its nodes, so one such graph of 40 does not stop it."""
    report = diagnose(_graph_set(), model=model, options=FAST)
    data = _stage(report)
    assert (data.status, data.summary["graphs"], data.summary["dropped_rows"]) == \
        ("warning", 39, 1)
    assert "g7" in report.notes[0]
    assert "overfit" in [s.name for s in report.stages]


def test_an_edgeless_graph_of_a_pyg_dataset_is_left_out(tmp_path):
    """``--dataset``: the graph is named by its index in the dataset."""
    path = tmp_path / "graphs.pt"
    torch.save([Data(x=g.x, edge_index=g.edge_index, y=g.y) for g in _graph_set().graphs], path)
    report = diagnose(dataset=str(path), options=FAST)
    assert (_stage(report).status, _stage(report).summary["dropped_rows"]) == ("warning", 1)
    assert "7 (index 7)" in report.notes[0]
    assert "overfit" in [s.name for s in report.stages]


def test_an_edgeless_graph_stops_a_model_without_self_loops(check_report):
    report = diagnose(_graph_set(), model=GATWithoutSelfLoops, options=FAST)
    check_report(report)
    assert (report.verdict, report.cause_ids) == ("bad_data", ["empty_graphs"])
    assert any("does not add self-loops" in n for n in report.notes)


# --------------------------------------------------------------------------- unscaled targets


def mse(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return ((scores - targets) ** 2).mean()


@pytest.fixture(scope="module")
def pic50_graphs(molecules, tmp_path_factory) -> GraphSet:
    root = tmp_path_factory.mktemp("pic50")
    molecules.to_csv(root / "manifest.csv", index=False)
    return load_graphs(root / "manifest.csv")


def _with_targets(gs: GraphSet, y: np.ndarray) -> GraphSet:
    graphs = [g.clone() for g in gs.graphs]
    for g, v in zip(graphs, y, strict=True):
        g.y = torch.tensor([float(v)])
    table = gs.table.assign(y=y)
    return GraphSet(graphs, table, gs.num_features, gs.manifest)


def _data_stage(gs: GraphSet, loss=None) -> Diagnosis:
    doc = Diagnosis(gs, Config(), None, loss, None, DoctorOptions(), 0)
    assert not data_stage(doc, [], [])  # unscaled targets never stop the diagnosis
    return doc


def test_raw_ic50_targets_under_mse_are_unscaled_targets(pic50_graphs):
    raw = 10 ** (9 - pic50_graphs.table["y"].to_numpy())  # IC50 in nM
    doc = _data_stage(_with_targets(pic50_graphs, raw), loss=mse)
    cause = doc.causes["unscaled_targets"]
    assert cause.score == pytest.approx(0.92) and cause.stage == "data"
    mean, std = raw.mean(), raw.std(ddof=1)
    for value in (mean, std, raw.min(), raw.max()):
        assert f"{value:.4g}" in cause.evidence
    assert "your loss mse is not scale-invariant" in cause.evidence
    assert f"y = (y - {mean:.4g}) / {std:.4g}" in cause.fix and "Standardize" in cause.fix
    assert cause.measured["grad_change"] > 0.5
    assert doc.stages[0].status == "warning" and doc.stages[0].summary["target_scale"] == \
        "sensitive"


def test_raw_targets_under_the_pairwise_loss_and_pic50_under_mse_are_not(pic50_graphs):
    raw = 10 ** (9 - pic50_graphs.table["y"].to_numpy())
    doc = _data_stage(_with_targets(pic50_graphs, raw))  # gatrank's loss, weight_by_diff on
    assert "unscaled_targets" not in doc.causes
    assert doc.stages[0].summary["target_scale"] == "invariant"
    doc = _data_stage(pic50_graphs, loss=mse)  # std ~1: unit scale, whatever the loss
    assert "unscaled_targets" not in doc.causes
    assert "target_scale" not in doc.stages[0].summary
    assert 5 < doc.stages[0].summary["y_mean"] < 8


def test_targets_of_tiny_spread_under_a_listwise_loss_are_unscaled_targets(pic50_graphs):
    # pIC50 / 60: std ~0.018, where ListNet's optimum asks for scores of that tiny spread
    tiny = pic50_graphs.table["y"].to_numpy() / 60
    doc = _data_stage(_with_targets(pic50_graphs, tiny), loss=listnet_loss)
    cause = doc.causes["unscaled_targets"]
    assert "std below 0.1" in cause.evidence
    assert f"y = (y - {tiny.mean():.4g}) / {tiny.std(ddof=1):.4g}" in cause.fix
    # the healthy twin: gatrank's pairwise loss reads the targets' order only
    doc = _data_stage(_with_targets(pic50_graphs, tiny))
    assert "unscaled_targets" not in doc.causes
    assert doc.stages[0].summary["target_scale"] == "invariant"


def test_unscaled_targets_rank_above_the_exploding_gradients_they_cause(pic50_graphs,
                                                                         check_report):
    raw = 10 ** (9 - pic50_graphs.table["y"].to_numpy())
    report = diagnose(_with_targets(pic50_graphs, raw), loss=mse, options=FAST)
    check_report(report)
    assert report.cause_ids[0] == "unscaled_targets", report.format_text()
    assert "exploding_gradients" in report.cause_ids
