"""gatrank.notebook.widgets: the epoch explorer judges validation metrics where a history has
them and the training metrics where it has none (a Monitor's log read by 04_full_train)."""

from __future__ import annotations

from gatrank.checks.verdict import evaluate_verdict
from gatrank.notebook.widgets import by_id, epoch_explorer, held_out_verdict


def _rec(epoch: int, pa: float, **extra) -> dict:
    return {"epoch": epoch, "loss": 1.0 / epoch, "pairwise_accuracy": pa, "spearman": pa - 0.1,
            "score_std": 0.3, "grad_norm": 0.2, **extra}


# outside a kernel the explorer's table is displayed as text on stdout


def test_epoch_explorer_falls_back_to_the_training_metrics_without_validation(capsys):
    history = [_rec(1, 0.6), _rec(2, 0.97)]
    box = epoch_explorer(history, prefix="val_")
    assert box.children[0].value == 2
    assert evaluate_verdict(history).label == "PASS"
    assert "epoch 2: overfit test PASS" in capsys.readouterr().out


def test_epoch_explorer_judges_held_out_data_by_the_held_out_signals_not_the_overfit_test(
        capsys):
    # what 04_full_train shows at epoch 20 on the embedded default: short of the overfit test's
    # 0.9 / 0.8, which held-out data need not reach, but every held-out signal is healthy
    history = [_rec(e, 0.97, val_pairwise_accuracy=pa, val_spearman=sp, val_score_std=0.4)
               for e, pa, sp in ((1, 0.62, 0.3), (10, 0.74, 0.66), (20, 0.765, 0.715))]
    epoch_explorer(history, prefix="val_")
    out = capsys.readouterr().out
    assert evaluate_verdict(history, prefix="val_").label.startswith("FAIL")  # the old reading
    assert "epoch 20: the held-out signals pass" in out and "FAIL" not in out
    line, table = held_out_verdict(history, 20)
    assert len(table) == 3 and table.index[0] == "validation score std > 0.1 (best epoch)"
    assert set(table["result"]) == {"ok"}


def test_held_out_verdict_names_the_signal_that_fails_at_that_epoch():
    history = [_rec(e, 0.97, val_pairwise_accuracy=0.6 + e / 100, val_spearman=0.2,
                    val_score_std=std) for e, std in ((1, 0.2), (2, 0.3), (3, 0.004))]
    line, table = held_out_verdict(history, 3)
    assert line.startswith("epoch 3: not yet: val_score_std")
    assert _result(table, "validation score std") == "FAIL"
    line, _ = held_out_verdict(history, 2)  # as if it had stopped at epoch 2: healthy
    assert line.startswith("epoch 2: the held-out signals pass")
    line, table = held_out_verdict(history, 1)  # nothing to improve on yet
    assert _result(table, "validation pairwise accuracy improved") == "FAIL"


def _result(table, rule_start: str) -> str:
    (row,) = [r for r in table.index if r.startswith(rule_start)]
    return table.loc[row, "result"]


def test_live_curves_redraw_while_training_unless_the_kernel_is_headless(monkeypatch):
    from gatrank.notebook import widgets
    from gatrank.project import HEADLESS_ENV

    shown: list[int] = []
    monkeypatch.setattr(widgets, "in_ipython", lambda: True)
    monkeypatch.setattr(widgets, "_figure_widget", lambda fig: None)  # redraw by display handle
    monkeypatch.setattr(widgets, "show", lambda fig, handle=None: shown.append(fig) or "handle")

    def run() -> list[int]:
        shown.clear()
        live = widgets.LiveCurves(builder=lambda history: len(history), min_interval_s=0.0)
        for epoch in (1, 2, 3):
            live(_rec(epoch, 0.6))
        live.finish()
        return list(shown)

    monkeypatch.delenv(HEADLESS_ENV, raising=False)
    assert run() == [1, 2, 3, 3]  # every record redrawn, then the final figure
    monkeypatch.setenv(HEADLESS_ENV, "1")
    assert run() == [3]  # only the final figure, the same one


def test_the_sample_browser_order_is_ascending_by_id_numbers_as_numbers():
    ids = ["g10", "g2", "CHEMBL101", "g1", "CHEMBL95"]
    assert [ids[i] for i in by_id(ids)] == ["CHEMBL95", "CHEMBL101", "g1", "g2", "g10"]
