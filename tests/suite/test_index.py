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
