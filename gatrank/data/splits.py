"""Train/val/test positions of a GraphSet: the manifest's split column or a seeded split."""

from __future__ import annotations

import numpy as np
import pandas as pd

from gatrank.data.graphset import GraphSet
from gatrank.data.manifest import SPLITS

__all__ = ["split_indices"]


def split_indices(gs: GraphSet, *, seed: int, val_fraction: float = 0.1,
                  test_fraction: float = 0.1) -> dict[str, list[int]]:
    """Positions in ``gs`` per split: ``{"train": [...], "val": [...], "test": [...]}`` (sorted).

    Uses the manifest's ``split`` column when it has one (every row must then have a split).
    Otherwise a seeded random split of about the given fractions; with groups, whole groups go
    to one split (so no query is spread over train and test) and at least one group stays in
    train.
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"val_fraction={val_fraction} and test_fraction={test_fraction} must be "
                         "in [0, 1) and sum to less than 1")
    t = gs.table
    n = len(t)
    if t["split"].notna().any():
        missing = t.loc[t["split"].isna(), "line"].tolist()
        if missing:
            raise ValueError(f"the manifest has a split column but lines {missing[:10]} have no "
                             "split: fill them in, or drop the column for a random split")
        return {s: t.index[t["split"] == s].tolist() for s in SPLITS}
    rng = np.random.default_rng(seed)
    n_test, n_val = round(test_fraction * n), round(val_fraction * n)
    out: dict[str, list[int]] = {s: [] for s in SPLITS}
    if t["group"].notna().any():
        # rows without a group each count as their own unit
        keys = [g if g is not None else f"\0row{i}" for i, g in enumerate(t["group"])]
        codes, uniq = pd.factorize(pd.Series(keys))
        members = [np.flatnonzero(codes == c).tolist() for c in range(len(uniq))]
        order = rng.permutation(len(uniq))
        for k, c in enumerate(order):
            last = k == len(order) - 1  # keep at least one group for training
            if not last and len(out["test"]) < n_test:
                out["test"] += members[c]
            elif not last and len(out["val"]) < n_val:
                out["val"] += members[c]
            else:
                out["train"] += members[c]
    else:
        n_test, n_val = min(n_test, max(n - 1, 0)), min(n_val, max(n - 1 - n_test, 0))
        perm = rng.permutation(n).tolist()
        out["test"], out["val"], out["train"] = (perm[:n_test], perm[n_test:n_test + n_val],
                                                 perm[n_test + n_val:])
    return {s: sorted(v) for s, v in out.items()}
