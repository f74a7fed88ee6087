"""The reference baselines: fitted to convergence, fair on planted signals, honest about what
they could not fit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch_geometric.data import Data

from gatrank import baselines
from gatrank.baselines import fit_baselines
from gatrank.data.graphset import GraphSet
from gatrank.metrics import spearman


def _graphset(y: np.ndarray, x_per_graph: list[np.ndarray], smiles: list[str] | None = None,
              groups: list | None = None) -> GraphSet:
    graphs = []
    for i, x in enumerate(x_per_graph):
        n = len(x)
        src = np.arange(max(n - 1, 0))
        ei = np.concatenate([np.stack([src, src + 1]), np.stack([src + 1, src])], 1)
        graphs.append(Data(x=torch.from_numpy(x.astype(np.float32)),
                           edge_index=torch.from_numpy(ei.astype(np.int64)),
                           y=torch.tensor([float(y[i])])))
    table = pd.DataFrame({"id": [f"g{i}" for i in range(len(y))], "y": y, "split": None,
                          "group": groups, "smiles": smiles})
    return GraphSet(graphs, table, x_per_graph[0].shape[1], Path("manifest.csv"))


def _planted(n: int = 120, f: int = 6, noise: float = 0.3, seed: int = 0):
    """Targets linear in the graphs' mean node features, plus noise."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=f)
    xs = [rng.normal(size=(int(rng.integers(3, 9)), f)) * rng.uniform(0.5, 3, size=f)
          for _ in range(n)]
    y = np.array([x.mean(0) @ w for x in xs]) + noise * rng.normal(size=n)
    idx = rng.permutation(n)
    splits = {"train": sorted(idx[: n * 6 // 10].tolist()),
              "val": sorted(idx[n * 6 // 10: n * 8 // 10].tolist()),
              "test": sorted(idx[n * 8 // 10:].tolist())}
    return _graphset(y, xs), splits, y


def test_the_linear_baseline_is_converged_a_tighter_tolerance_changes_nothing():
    gs, splits, y = _planted()
    loose = fit_baselines(gs, splits, names=["linear"], tol=1e-6)["linear"]
    tight = fit_baselines(gs, splits, names=["linear"], tol=1e-10)["linear"]
    assert loose.info["converged"] and tight.info["converged"]
    assert loose.info["grad_norm"] <= 1e-6 and tight.info["grad_norm"] <= 1e-10
    assert abs(loose.info["val_spearman"] - tight.info["val_spearman"]) < 0.005
    assert loose.info["l2"] == tight.info["l2"]
    t = splits["test"]
    assert spearman(loose.scores(t), y[t]) == pytest.approx(spearman(tight.scores(t), y[t]),
                                                             abs=0.005)


def test_the_linear_baseline_finds_a_planted_linear_signal_and_chooses_l2_on_validation():
    gs, splits, y = _planted(noise=0.05)
    b = fit_baselines(gs, splits, names=["linear"])["linear"]
    t = splits["test"]
    assert spearman(b.scores(t), y[t]) > 0.95
    grid = b.info["val_spearman_by_l2"]
    assert set(grid) == {f"{v:g}" for v in baselines.LINEAR_L2_GRID}
    assert grid[f"{b.info['l2']:g}"] == max(grid.values())
    assert b.info["fit_s"] >= 0 and b.info["pairs"] == 72 * 71 // 2  # no tied targets


def test_the_linear_baseline_does_not_depend_on_the_row_order():
    gs, splits, y = _planted()
    perm = np.random.default_rng(5).permutation(len(y))
    inverse = np.argsort(perm)
    shuffled = _graphset(y[perm], [gs.graphs[i].x.numpy() for i in perm])
    shuffled_splits = {k: sorted(inverse[v].tolist()) for k, v in splits.items()}
    a = fit_baselines(gs, splits, names=["linear"])["linear"]
    b = fit_baselines(shuffled, shuffled_splits, names=["linear"])["linear"]
    t = splits["test"]
    np.testing.assert_allclose(a.scores(t), b.scores(inverse[t]), atol=1e-5)


def test_pairs_are_the_ordered_pairs_inside_groups_beyond_tie_eps():
    y = np.array([0.0, 1.0, 1.0 + 1e-9, 3.0, 2.0, 5.0])
    groups = np.array(["a", "a", "a", "b", "b", "b"], dtype=object)
    hi, lo = baselines._pairs(y, groups, 1e-6, np.random.default_rng(0))
    got = set(zip(hi.tolist(), lo.tolist(), strict=True))
    want = {(i, j) for i in range(6) for j in range(6)
            if groups[i] == groups[j] and y[i] - y[j] > 1e-6}
    assert got == want and len(hi) == len(got)


def test_pairs_are_sampled_not_enumerated_beyond_the_limits(monkeypatch):
    monkeypatch.setattr(baselines, "MAX_PAIRS", 500)
    monkeypatch.setattr(baselines, "_ENUMERATE_MAX", 100)
    y = np.random.default_rng(1).normal(size=400)
    hi, lo = baselines._pairs(y, None, 1e-6, np.random.default_rng(0))
    assert len(hi) == 500 and np.all(y[hi] - y[lo] > 1e-6)
    assert len(set(zip(hi.tolist(), lo.tolist(), strict=True))) == 500


def _alcohols_and_amines(n: int):
    """Chains of 1-``n`` carbons ending in OH, NH2 or H: the target counts carbons (plus one
    for an OH), which Morgan counts see and the mean atom features of a chain hardly do."""
    smiles, y = [], []
    for c in range(1, n + 1):
        for end, bonus in (("O", 1.0), ("N", 0.0), ("", 0.0)):
            smiles.append("C" * c + end)
            y.append(c + bonus)
    return smiles, np.array(y)


def test_the_fingerprint_baselines_rank_molecules_by_what_their_substructures_say():
    smiles, y = _alcohols_and_amines(30)
    rng = np.random.default_rng(2)
    xs = [rng.normal(size=(3, 4)) for _ in smiles]
    gs = _graphset(y, xs, smiles=smiles)
    idx = rng.permutation(len(y))
    splits = {"train": sorted(idx[:60].tolist()), "val": sorted(idx[60:75].tolist()),
              "test": sorted(idx[75:].tolist())}
    fitted = fit_baselines(gs, splits, names=["fingerprint", "fingerprint_rf"], seed=0)
    t = splits["test"]
    ridge, rf = fitted["fingerprint"], fitted["fingerprint_rf"]
    assert spearman(ridge.scores(t), y[t]) > 0.9
    assert spearman(rf.scores(t), y[t]) > 0.8
    assert ridge.info["alpha"] in baselines.RIDGE_ALPHA_GRID
    assert "unparsed_smiles" not in ridge.info


def test_a_fingerprint_baseline_without_smiles_is_skipped_with_the_reason():
    gs, splits, _ = _planted(n=30)
    b = fit_baselines(gs, splits, names=["linear", "fingerprint"])
    assert not b["linear"].skipped
    assert "no SMILES" in b["fingerprint"].skipped
    with pytest.raises(ValueError, match="fingerprint baseline was skipped: the graphs have no"):
        b["fingerprint"].scores([0, 1])


def test_unparsable_smiles_are_counted_not_fatal():
    smiles, y = _alcohols_and_amines(10)
    smiles[3] = "not a molecule"
    gs = _graphset(y, [np.ones((2, 2))] * len(y), smiles=smiles)
    splits = {"train": list(range(0, 30, 2)), "val": list(range(1, 30, 2)), "test": []}
    b = fit_baselines(gs, splits, names=["fingerprint"])["fingerprint"]
    assert b.info["unparsed_smiles"] == 1


def test_bad_requests_name_what_is_wrong():
    gs, splits, _ = _planted(n=20)
    with pytest.raises(ValueError, match=r"unknown baseline\(s\) \['ridge'\]; choose from"):
        fit_baselines(gs, splits, names=["ridge"])
    with pytest.raises(ValueError, match="at least 2 training graphs, got 1"):
        fit_baselines(gs, {"train": [0], "val": [1, 2, 3]})


def test_without_a_validation_split_the_middle_of_the_grid_is_used():
    gs, splits, y = _planted(n=40)
    b = fit_baselines(gs, {"train": splits["train"]}, names=["linear"])["linear"]
    assert b.info["l2"] == baselines.LINEAR_L2_GRID[len(baselines.LINEAR_L2_GRID) // 2]
    assert b.info["val_spearman_by_l2"] == {} and "val_spearman" not in b.info
