"""The per-step checks the notebooks show, on hand-built inputs: the same rules and labels as
the verdict, oracles for the counts."""

from __future__ import annotations

import pytest
import torch

from gatrank.checks import steps
from gatrank.checks.verdict import THRESHOLDS, evaluate_verdict


def _rec(epoch, pa, sp, std, gn=0.5, loss=0.5):
    return {"epoch": epoch, "loss": loss, "pairwise_accuracy": pa, "spearman": sp,
            "score_std": std, "grad_norm": gn}


@pytest.mark.parametrize("pa, sp, std", [(0.55, 0.1, 0.005), (0.97, 0.95, 0.5)])
def test_evaluation_red_flags_are_the_verdicts(pa, sp, std):
    checks = steps.evaluation_checks({"pairwise_accuracy": pa, "spearman": sp, "score_std": std},
                                     {})
    verdict = {c.name: c.to_dict() for c in evaluate_verdict([_rec(1, pa, sp, std)]).checks}
    for c in checks:
        if c["kind"] == "red_flag":
            assert c == verdict[c["name"]]
    assert [c["name"] for c in checks] == ["score_std", "pairwise_accuracy_random",
                                           "spearman_none", "score_collapsed"]
    assert checks[0]["ok"] == (std > THRESHOLDS["score_std"])


def test_training_checks_use_the_runbooks_thresholds():
    hist = [_rec(1, 0.5, 0.1, 0.2, gn=THRESHOLDS["grad_norm"]),
            _rec(2, 0.8, 0.6, THRESHOLDS["score_std"], gn=THRESHOLDS["grad_norm"])]
    by_name = {c["name"]: c for c in steps.training_checks(hist, {"best_epoch": 2})}
    assert by_name["val_score_std"]["rule"] == "validation score std > 0.1 (best epoch)"
    assert not by_name["val_score_std"]["ok"] and not by_name["grad_norm"]["ok"]
    assert by_name["grad_norm"]["rule"] == "gradient norm > 0.01 (median)"
    assert by_name["val_pairwise_accuracy_improved"]["ok"]


def test_check_and_summary_agree_with_the_verdicts_check_type():
    ok = steps.check("a", "pass", "rule", 1, True)
    warn = steps.check("b", "warning", "rule", None, False, "why")
    assert "detail" not in ok and warn["detail"] == "why"
    assert steps.summarize_checks([ok, warn]) == (True, "PASS (with warnings)")
    with pytest.raises(ValueError, match="kind"):
        steps.check("c", "fatal", "rule", 0, False)


def test_duplicate_graphs_groups_what_wl_cannot_tell_apart(make_graphs):
    import pandas as pd

    graphs = make_graphs(4)
    graphs[2] = graphs[0].clone()  # same graph, another target
    graphs[3] = graphs[1].clone()
    graphs[3].edge_attr = torch.ones(graphs[3].edge_index.shape[1], 1)  # unseen by the GAT
    table = pd.DataFrame({"id": ["a", "b", "c", "d"], "y": [0.0, 1.0, 5.0, 1.0]})
    dups = steps.duplicate_graphs(graphs, table).sort_values("ids").reset_index(drop=True)
    assert dups[["size", "ids", "y"]].to_dict("records") == [
        {"size": 2, "ids": "a, c", "y": "0, 5"}, {"size": 2, "ids": "b, d", "y": "1, 1"}]
    assert dups["conflicting"].tolist() == [True, False]
    assert dups["y_range"].tolist() == [5.0, 0.0]
