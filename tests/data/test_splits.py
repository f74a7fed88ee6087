"""gatrank.data.splits: seeded, group-respecting train/val/test splits."""

from __future__ import annotations

import pytest
from tiny_graphs import save_pt, write_manifest

from gatrank.data import load_graphs, split_indices


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
