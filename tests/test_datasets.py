"""gatrank.datasets: embedded data sets written as manifests that load cleanly."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import gatrank.datasets as ds
from gatrank.config import ConfigError, DataConfig
from gatrank.data import load_graphs, read_manifest
from gatrank.datasets import (
    DATASETS,
    dataset_manifest,
    default_manifest,
    list_datasets,
    write_dataset,
)


def test_list_datasets_names_and_sizes():
    listed = {d["name"]: d for d in list_datasets()}
    assert set(listed) == set(DATASETS) == {"chembl-activity", "nci-tpsa", "nci-logp",
                                            "synthetic"}
    assert listed["chembl-activity"]["size"] == 1017
    assert all(d["description"] for d in listed.values())


def test_unknown_name_and_option_are_refused(tmp_path):
    with pytest.raises(ValueError, match="chembl-activity, nci-tpsa, nci-logp, synthetic"):
        write_dataset("zinc", tmp_path)
    with pytest.raises(ValueError, match="noise"):
        write_dataset("synthetic", tmp_path, n=4, nosie=0.1)
    with pytest.raises(ValueError, match="none"):
        write_dataset("nci-tpsa", tmp_path, noise=0.1)


def test_chembl_activity_has_all_1017_compounds_with_pic50(tmp_path):
    table = read_manifest(write_dataset("chembl-activity", tmp_path))
    assert len(table) == 1017 and table["id"].is_unique
    assert table["smiles"].notna().all() and table["path"].isna().all()
    assert 4.0 < table["y"].min() < table["y"].max() < 10.0  # pIC50 range


def test_chembl_activity_subset_loads_cleanly(tmp_path):
    gs = load_graphs(write_dataset("chembl-activity", tmp_path, n=40, seed=3))
    assert len(gs) == 40 and gs.dropped == [] and gs.num_features == 177
    full = ds._chembl_activity().set_index("id")
    for gid, y, smi in gs.table[["id", "y", "smiles"]].itertuples(index=False):
        assert full.loc[gid, "y"] == y and full.loc[gid, "smiles"] == smi  # join kept pairs


@pytest.mark.slow
def test_chembl_activity_loads_fully(tmp_path):
    gs = load_graphs(write_dataset("chembl-activity", tmp_path))
    assert len(gs) == 1017 and gs.dropped == []


def test_nci_tpsa_source_rows():
    table = ds._nci_tpsa()
    assert len(table) == list_datasets()[1]["size"] == 4991  # 8 of 4,999 RDKit cannot parse
    assert table["smiles"].str.contains("#").any()  # '#' is a triple bond, not a comment


def test_nci_tpsa_sample_loads_cleanly(tmp_path):
    gs = load_graphs(write_dataset("nci-tpsa", tmp_path, n=30))
    assert len(gs) == 30 and gs.dropped == [] and (gs.table["y"] >= 0).all()


def test_nci_logp_source_rows_are_the_first_200_nci_molecules_with_their_clogp():
    from rdkit import Chem

    table = ds._nci_logp()
    assert len(table) == list_datasets()[2]["size"] == 200  # every record parses, with bonds
    assert table["id"].is_unique and table["id"].tolist() == [str(k) for k in range(1, 201)]
    assert np.isfinite(table["y"]).all() and -4 < table["y"].min() < table["y"].max() < 10
    assert table["y"].iloc[0] == 0.727  # the first record's DAYLIGHT_CLOGP, read from the file
    # oracle: record k is NCI row k of first_5K.smi, the molecule nci-tpsa calls id k
    tpsa = ds._nci_tpsa().set_index("id")["smiles"]
    canon = Chem.CanonSmiles
    same = [canon(smi) == canon(tpsa[gid]) for gid, smi in zip(table["id"], table["smiles"],
                                                                 strict=True) if gid in tpsa]
    assert len(same) >= 190 and all(same)


def test_nci_logp_loads_cleanly_and_is_cached_once(tmp_path, monkeypatch):
    gs = load_graphs(write_dataset("nci-logp", tmp_path / "sample", n=30, seed=2))
    assert len(gs) == 30 and gs.dropped == [] and gs.num_features == 177
    assert np.isfinite(gs.table["y"]).all() and gs.table["id"].is_unique
    path = dataset_manifest("nci-logp", cache_dir=tmp_path)
    assert path == tmp_path / "datasets" / "nci-logp" / "manifest.csv"
    assert len(read_manifest(path)) == 200

    def no_rewrite(*args, **kwargs):
        raise AssertionError("dataset_manifest rewrote an existing data set")

    monkeypatch.setattr(ds, "write_dataset", no_rewrite)
    assert dataset_manifest("nci-logp", cache_dir=tmp_path) == path


def test_n_larger_than_the_set_is_refused(tmp_path):
    with pytest.raises(ValueError, match="1017 molecules"):
        write_dataset("chembl-activity", tmp_path, n=5000)


def _planted_signal(graph) -> float:
    """Oracle: recompute the planted signal from the graph itself."""
    type0 = float(graph.x[:, 0].sum())
    cycle_rank = graph.edge_index.shape[1] // 2 - graph.num_nodes + 1
    return type0 + 0.5 * cycle_rank


def test_synthetic_loads_and_target_follows_the_planted_signal(tmp_path):
    manifest = write_dataset("synthetic", tmp_path, n=24, seed=1)
    gs = load_graphs(manifest)
    assert len(gs) == 24 and gs.num_features == 6 and gs.dropped == []
    assert len(list((tmp_path / "graphs").glob("*.pt"))) == 24
    signal = np.array([_planted_signal(g) for g in gs.graphs])
    assert np.allclose(pd.read_csv(manifest)["signal"].to_numpy(), signal)  # matches the oracle
    y = gs.table["y"].to_numpy()
    assert np.corrcoef(signal, y)[0, 1] > 0.98
    noisy = load_graphs(write_dataset("synthetic", tmp_path / "noisy", n=24, seed=1, noise=2.0))
    assert np.corrcoef(signal, noisy.table["y"].to_numpy())[0, 1] < 0.9


def test_synthetic_is_deterministic_for_a_seed(tmp_path):
    a = write_dataset("synthetic", tmp_path / "a", n=12, seed=5)
    b = write_dataset("synthetic", tmp_path / "b", n=12, seed=5)
    c = write_dataset("synthetic", tmp_path / "c", n=12, seed=6)
    assert a.read_text() == b.read_text() != c.read_text()
    ga, gb = load_graphs(a), load_graphs(b)
    for x, y in zip(ga.graphs, gb.graphs, strict=True):
        assert torch.equal(x.x, y.x) and torch.equal(x.edge_index, y.edge_index)


def test_synthetic_knobs_groups_and_constant_features(tmp_path):
    gs = load_graphs(write_dataset("synthetic", tmp_path, n=20, num_groups=4,
                                   constant_features=True))
    sizes = gs.table["group"].value_counts()
    assert len(sizes) == 4 and (sizes >= 2).all()
    assert sorted({int(g.group) for g in gs.graphs}) == [0, 1, 2, 3]
    assert all((g.x == 1).all() for g in gs.graphs)  # nothing to tell nodes apart
    with pytest.raises(ValueError, match="num_groups"):
        write_dataset("synthetic", tmp_path / "bad", n=5, num_groups=3)


def test_default_manifest_is_written_once(tmp_path, monkeypatch):
    path = default_manifest(cache_dir=tmp_path)
    assert path == tmp_path / "datasets" / "chembl-activity" / "manifest.csv"
    assert len(read_manifest(path)) == 1017

    def no_rewrite(*args, **kwargs):
        raise AssertionError("default_manifest rewrote an existing data set")

    monkeypatch.setattr(ds, "write_dataset", no_rewrite)
    assert default_manifest(cache_dir=tmp_path) == path


def test_with_source_lets_a_flag_replace_the_configs_source():
    base = DataConfig(manifest="m.csv", on_error="skip")
    assert ds.with_source(base) is base
    assert (ds.with_source(base, dataset="mod:ds").manifest,
            ds.with_source(base, dataset="mod:ds").dataset) == ("", "mod:ds")
    assert ds.with_source(base, dataset="mod:ds").on_error == "skip"
    other = DataConfig(dataset="mod:ds")
    assert (ds.with_source(other, "n.csv").manifest, ds.with_source(other, "n.csv").dataset) \
        == ("n.csv", "")
    with pytest.raises(ConfigError, match="not both"):
        ds.with_source(base, "n.csv", "mod:ds")


def test_load_and_check_data_read_the_source_the_config_names(tmp_path):
    manifest = write_dataset("synthetic", tmp_path, n=8)
    by_manifest = ds.load_data(DataConfig(manifest=str(manifest)))
    torch.save(by_manifest.graphs, tmp_path / "graphs.pt")
    by_dataset = ds.load_data(DataConfig(dataset=str(tmp_path / "graphs.pt")))
    assert by_manifest.manifest == manifest and by_dataset.dataset == str(tmp_path / "graphs.pt")
    # gatrank's own graphs saved as a dataset load back as they were (ids from gid)
    assert by_dataset.table["id"].tolist() == by_manifest.table["id"].tolist()
    assert all(torch.equal(a.x, b.x) for a, b in zip(by_manifest.graphs, by_dataset.graphs,
                                                     strict=True))
    assert ds.check_data(DataConfig(manifest=str(manifest))).summary["num_graphs"] == 8
    report = ds.check_data(DataConfig(dataset=str(tmp_path / "graphs.pt")))
    assert report.ok and report.summary["dataset"] == str(tmp_path / "graphs.pt")

