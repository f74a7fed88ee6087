"""gatrank.suite.index: the index page lists every check with its measured value and marks
failures, self-contained (no script, no external link)."""

from __future__ import annotations

from gatrank.suite.index import render_index


def _summary(notebooks: list[dict]) -> dict:
    return {"gatrank": "0", "created": "2024-01-01T00:00:00+00:00", "manifest": "m.csv",
            "status": "FAIL", "duration_s": 12.5, "notebooks": notebooks}


def test_index_lists_every_check_with_its_value_and_marks_failures(external_ref):
    ok = {"name": "03_overfit", "step": "Step 1: overfit test", "status": "FAIL (red flags)",
          "duration_s": 3.0, "html": "03_overfit.html", "ipynb": "03_overfit.ipynb", "error": "",
          "results": {"checks": [
              {"name": "spearman", "kind": "pass", "rule": "Spearman > 0.8", "value": 0.123456,
               "ok": False},
              {"name": "score_collapsed", "kind": "red_flag", "rule": "score std < 0.01",
               "value": 0.001, "ok": False},
              {"name": "ties", "kind": "warning", "rule": "few ties", "value": 0.5, "ok": True},
          ]}}
    broken = {"name": "01_data_checks", "step": "Step 2B", "status": "ERROR", "duration_s": 1.0,
              "html": "01_data_checks.html", "ipynb": "01_data_checks.ipynb",
              "error": "DataError: 3 <problems>", "results": None}
    page = render_index(_summary([broken, ok]))
    assert page.count('href="03_overfit.html"') >= 2 and 'href="01_data_checks.ipynb"' in page
    assert "Spearman &gt; 0.8" in page and "0.1235" in page
    rows = {r.split("</td>")[0]: r for r in page.split("<tr><td>")[1:]}
    assert 'class="badge FAIL">FAIL<' in rows["Spearman &gt; 0.8"]
    assert "RED FLAG" in rows["score std &lt; 0.01"]
    assert "WARNING" not in rows["few ties"] and ">ok<" in rows["few ties"]
    assert "DataError: 3 &lt;problems&gt;" in page
    assert "failed before recording its checks" in page
    assert "<script" not in page and not external_ref.search(page) and "http" not in page


def _margin(diff: float, low: float, high: float) -> dict:
    return {"metric": "spearman", "difference": diff, "low": low, "high": high, "level": 0.95,
            "n": 102, "n_boot": 2000, "better": low > 0, "worse": high < 0}


def test_the_index_says_in_a_line_whether_the_model_beats_each_baseline():
    ev = {"name": "05_eval", "step": "evaluation", "status": "PASS (with warnings)",
          "duration_s": 5.0, "html": "05_eval.html", "ipynb": "05_eval.ipynb", "error": "",
          "results": {"checks": [], "split": "test", "margins": {
              "linear": _margin(0.105, 0.024, 0.196),
              "fingerprint": _margin(-0.182, -0.277, -0.101),
              "fingerprint_rf": _margin(0.01, -0.05, 0.07)}}}
    page = render_index(_summary([ev]))
    section = page.split("The model against the baselines")[1].split("</ul>")[0]
    items = section.split("<li>")[1:]
    assert len(items) == 3
    assert 'badge PASS">beats<' in items[0] and "beats the linear baseline by more than the " \
        "noise (Spearman +0.105, 95% interval +0.024 to +0.196, 102 graphs)" in items[0]
    assert 'badge FAIL">loses<' in items[1] and "loses to the fingerprint baseline" in items[1]
    assert "shows no difference from the fingerprint_rf baseline beyond the noise" in items[2]
    assert "05_eval (test split)" in items[0]
    # without margins (an older run, or evaluation without baselines): no such section
    ev["results"].pop("margins")
    assert "The model against the baselines" not in render_index(_summary([ev]))


def test_the_index_lists_the_fixes_03_verified_and_those_that_need_the_user():
    fixes = [{"cause": "vanishing_gradients", "status": "verified", "result": "verified",
              "fix": "loss.temperature 10000.0 -> 1.0", "epoch": 40, "pairwise_accuracy": 0.92,
              "spearman": 0.95, "score_std": 2.5},
             {"cause": "loss_detached", "status": "human", "result": "needs you",
              "fix": "edit the loss <here>", "epoch": None, "pairwise_accuracy": None,
              "spearman": None, "score_std": None}]
    nb = {"name": "03_overfit", "step": "Step 1", "status": "FAIL", "duration_s": 3.0,
          "html": "03_overfit.html", "ipynb": "03_overfit.ipynb", "error": "",
          "results": {"checks": [], "fixes": fixes}}
    page = render_index(_summary([nb]))
    items = page.split("<h2>Verified fixes</h2>")[1].split("</ul>")[0].split("<li>")[1:]
    assert len(items) == 2
    assert 'badge PASS">verified<' in items[0] and "vanishing_gradients" in items[0]
    assert "the overfit test passes at epoch 40 (pairwise accuracy 0.92" in items[0]
    assert 'badge WARN">needs you<' in items[1] and "edit the loss &lt;here&gt;" in items[1]
    assert "passes" not in items[1]
    nb["results"]["fixes"] = []  # a passing 03: nothing to verify, no section
    assert "Verified fixes" not in render_index(_summary([nb]))
