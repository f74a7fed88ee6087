"""gatrank.data.featurize: SMILES features against PyG's from_smiles, and their cache."""

from __future__ import annotations

import logging

import torch
from tiny_graphs import write_manifest
from torch_geometric.utils import from_smiles

import gatrank.data as gd
import gatrank.data.featurize as gd_featurize
from gatrank.data import featurize_smiles, load_graphs, safe_torch_load


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
