"""gatrank.data.problems: DataError survives pickling (process pools) with its problems."""

from __future__ import annotations

import pickle

import gatrank.data as gd
from gatrank.data import DataError


def test_data_error_pickles_with_its_problems():
    err = DataError([gd.DataProblem(2, "a", "m.csv", "bad", "fix it", "nan_target")], "m.csv")
    back = pickle.loads(pickle.dumps(err))
    assert back.problems == err.problems and str(back) == str(err)
