"""gatrank.notebook.widgets: the epoch explorer judges validation metrics where a history has
them and the training metrics where it has none (a Monitor's log read by 04_full_train)."""

from __future__ import annotations

from gatrank.checks.verdict import evaluate_verdict
from gatrank.notebook.widgets import epoch_explorer


def _rec(epoch: int, pa: float, **extra) -> dict:
    return {"epoch": epoch, "loss": 1.0 / epoch, "pairwise_accuracy": pa, "spearman": pa - 0.1,
            "score_std": 0.3, "grad_norm": 0.2, **extra}


# outside a kernel the explorer's table is displayed as text on stdout


def test_epoch_explorer_falls_back_to_the_training_metrics_without_validation(capsys):
    history = [_rec(1, 0.6), _rec(2, 0.97)]
    box = epoch_explorer(history, prefix="val_")
    assert box.children[0].value == 2
    assert evaluate_verdict(history).label == "PASS"
    assert "PASS" in capsys.readouterr().out


def test_epoch_explorer_reads_the_validation_metrics_when_there(capsys):
    history = [_rec(e, 0.97, val_pairwise_accuracy=0.55, val_spearman=0.1, val_score_std=0.001)
               for e in (1, 2)]
    epoch_explorer(history, prefix="val_")
    assert evaluate_verdict(history, prefix="val_").label == "FAIL (red flags)"
    assert "FAIL (red flags)" in capsys.readouterr().out


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
