"""gatrank.render, the one HTML renderer: escaping, the tables read back with an HTML parser
(rows in order, cells as they should be), the SVG chart as XML, and the ``_repr_html_`` of the
results built directly (no training) beside their unchanged text forms."""

from __future__ import annotations

import html
import math
import subprocess
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pytest

from gatrank import render
from gatrank.checks.verdict import Check, evaluate_run, format_verdict
from gatrank.data.check import CheckReport
from gatrank.data.problems import DataProblem
from gatrank.doctor.report import Cause, DoctorReport, Stage
from gatrank.doctor.trace_types import Culprit, ModuleTrace, SignalTrace
from gatrank.notebook import display

SVG = "{http://www.w3.org/2000/svg}"


class _Tables(HTMLParser):
    """Every table of a fragment: rows of cells ``{"text", "style", "tags"}`` (``tags``: the
    elements inside the cell), the ``<tr>`` styles, and every start tag seen."""

    def __init__(self, text: str):
        super().__init__()
        self.tables: list[dict] = []
        self.tags: list[str] = []
        self._cell: dict | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        a = dict(attrs)
        if tag == "table":
            self.tables.append({"head": [], "rows": [], "row_styles": []})
        elif tag == "tr" and self.tables:
            self.tables[-1]["row_styles"].append(a.get("style") or "")
            self.tables[-1]["rows"].append([])
        elif tag in ("td", "th"):
            self._cell = {"text": "", "style": a.get("style") or "", "tags": [], "th": tag == "th"}
        elif self._cell is not None:
            self._cell["tags"].append(tag)

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            t = self.tables[-1]
            if self._cell["th"]:
                t["head"].append(self._cell["text"])
            else:
                t["rows"][-1].append(self._cell)
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data


def _table(text: str, k: int = 0) -> tuple[list[str], list[list[dict]]]:
    t = _Tables(text).tables[k]
    return t["head"], [r for r in t["rows"] if r]


def _texts(rows: list[list[dict]], col: int) -> list[str]:
    return [r[col]["text"] for r in rows]


# --------------------------------------------------------------------------- tables


def test_table_escapes_values_and_formats_numbers():
    out = render.table(["a<b", "n"], [["<i>x</i> & y", 0.123456789], [None, 3]], align="lr")
    head, rows = _table(out)
    assert head == ["a<b", "n"]
    assert _texts(rows, 0) == ["<i>x</i> & y", "-"] and _texts(rows, 1) == ["0.1235", "3"]
    assert "<i>" not in out and "&lt;i&gt;" in out
    assert "text-align:right" in rows[0][1]["style"]
    html_cell = render.table(["c"], [[render.Html("<code>id</code>")]])
    assert _table(html_cell)[1][0][0]["tags"] == ["code"]


def test_script_in_evidence_comes_out_escaped():
    report = {"verdict": "collapsed<script>", "causes": [
        {"id": "dead_activations", "evidence": "<script>alert(1)</script>", "fix": "<b>x</b>",
         "score": 0.9, "stage": "model"}]}
    out = render.causes_html(report, command="gatrank doctor --manifest '<m>'")
    parsed = _Tables(out)
    assert "script" not in parsed.tags and parsed.tags.count("b") == 1  # the verdict's
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in out
    _, rows = _table(out)
    assert rows[0][3]["text"] == "<script>alert(1)</script>"


def test_causes_are_rows_in_ranked_order_with_their_ids_in_code():
    ids = ["learning_rate_too_low", "over_regularized", "insufficient_capacity"]
    report = {"verdict": "cannot_fit", "causes": [
        {"id": i, "evidence": f"evidence {k}", "fix": f"fix {k}", "score": 0.9 - 0.1 * k,
         "stage": "overfit"} for k, i in enumerate(ids)]}
    out = render.causes_html(report)
    head, rows = _table(out)
    assert head == ["#", "cause", "likelihood", "evidence", "fix"]  # nothing tried: no column
    assert _texts(rows, 0) == ["1", "2", "3"]
    assert [r[1]["text"].split("from the")[0] for r in rows] == ids
    assert all("code" in r[1]["tags"] for r in rows)
    assert _texts(rows, 2) == ["0.90", "0.80", "0.70"]
    assert "run <code>gatrank doctor</code>" in out
    assert "gatrank doctor" not in render.causes_html(report, command=None)
    none = render.causes_html({"verdict": "healthy", "causes": []})
    assert "no cause of collapse found" in none and "<table" not in none


def test_a_verified_cause_shows_the_verified_mark_and_the_others_their_status():
    causes = [
        {"id": "learning_rate_too_low", "evidence": "e", "fix": "f", "score": 0.95,
         "stage": "overfit", "verification": {"status": "verified", "epoch": 37,
                                              "fix": {"label": "lr 1e-07 -> 0.005"}}},
        {"id": "over_regularized", "evidence": "e", "fix": "f", "score": 0.6, "stage": "overfit",
         "verification": {"status": "not_enough", "epoch": None}},
        {"id": "no_signal", "evidence": "e", "fix": "f", "score": 0.5, "stage": "heldout",
         "verification": {"status": "human"}},
        {"id": "oversmoothing", "evidence": "e", "fix": "f", "score": 0.4, "stage": "model"},
    ]
    head, rows = _table(render.causes_html({"verdict": "cannot_fit", "causes": causes}))
    col = head.index("verification")
    marks = _texts(rows, col)
    assert marks[0] == "Verified: the overfit test passes at epoch 37"
    assert "#1a7f37" in rows[0][col]["style"]
    assert marks[1:] == ["fix tried, not enough alone", "fix needs you", "-"]
    no_epoch = dict(causes[0], verification={"status": "verified", "epoch": None})
    _, rows = _table(render.causes_html({"verdict": "x", "causes": [no_epoch]}))
    assert rows[0][col]["text"] == "Verified"


def test_checks_html_marks_failures_red_and_warnings_amber():
    checks = [Check("a", "pass", "pairwise accuracy > 0.9", 0.95, True),
              Check("b", "pass", "Spearman > 0.8", 0.5, False),
              Check("c", "red_flag", "score std < 0.01", 0.001, False),
              {"name": "d", "kind": "warning", "rule": "<w>", "value": float("nan"),
               "ok": False, "detail": "why"}]
    out = render.checks_html(checks)
    head, rows = _table(out)
    assert head == ["check", "kind", "measured", "result", "detail"]
    assert _texts(rows, 3) == ["ok", "FAIL", "FLAG", "WARN"]
    assert _texts(rows, 2) == ["0.95", "0.5", "0.001", ""]
    assert "#cf222e" in rows[1][3]["style"] and "#cf222e" in rows[2][3]["style"]
    assert "#9a6700" in rows[3][3]["style"] and "color" not in rows[0][3]["style"]
    assert rows[3][0]["text"] == "<w>" and rows[3][4]["text"] == "why"
    # the notebooks' table is this one
    assert display._checks_html(checks) == out
    assert list(display.checks_table(checks)["result"]) == ["ok", "FAIL", "FLAG", "WARN"]


def test_fixes_html_has_one_row_per_fix():
    rows = [{"cause": "learning_rate_too_low", "status": "verified", "result": "verified",
             "fix": "lr 1e-07 -> 0.005", "epoch": 37, "pairwise_accuracy": 0.97,
             "spearman": 0.93, "score_std": 1.234567},
            {"cause": "over_regularized", "status": "not_enough", "result": "not enough alone",
             "fix": "dropout 0", "epoch": None, "pairwise_accuracy": None, "spearman": None,
             "score_std": None}]
    head, body = _table(render.fixes_html(rows))
    assert head[:3] == ["cause", "result", "change applied"]
    assert _texts(body, 0) == ["learning_rate_too_low", "over_regularized"]
    assert [r[3]["text"] for r in body] == ["37", "-"] and body[0][6]["text"] == "1.235"
    assert "#1a7f37" in body[0][1]["style"] and "#1a7f37" not in body[1][1]["style"]


# --------------------------------------------------------------------------- results


def _history(pa):
    return [{"epoch": e, "loss": 1.0 / e, "pairwise_accuracy": p, "spearman": p - 0.05,
             "score_std": 0.5, "grad_norm": 0.5} for e, p in enumerate(pa, 1)]


def test_verdict_html_says_what_format_verdict_says():
    v = evaluate_run(_history([0.5, 0.55, 0.6, 0.65, 0.7, 0.75]))
    assert v.trend and not v.passed
    before = format_verdict(v)
    out = v._repr_html_()
    assert str(v) == before  # the text form is unchanged
    assert f"verdict: {v.label}" in out and "#cf222e" in out.split("</h3>")[0]
    _, rows = _table(out)
    assert _texts(rows, 0) == [c.rule for c in v.checks]
    assert _texts(rows, 2) == [f"{c.value:.4g}" for c in v.checks]
    assert html.escape(v.still_learning) in out and html.escape(v.thresholds) in out
    # a verdict's dict alone (a results file) still says the run is learning
    assert "still learning: pairwise accuracy 0.600 -&gt; 0.750 over epochs 3-6" in \
        render.verdict_html(v.to_dict())
    passed = evaluate_run(_history([0.6, 0.95, 0.97, 0.98]))
    out = passed._repr_html_()
    assert passed.passed and "#1a7f37" in out.split("</h3>")[0]
    assert f"criteria first met at epoch {passed.epochs_to_pass}" in out


def _problem(code, index, gid, problem="<bad> row", warning=False):
    return DataProblem(None, gid, "my:dataset", problem, f"fix {code}",
                       "singleton_group" if warning else code, index)


def test_check_report_names_each_problems_graph_index_and_id():
    report = CheckReport([_problem("nan_features", 3, "mol_3"),
                          _problem("empty_graph", 7, "mol_7"),
                          _problem("singleton_group", 9, "mol_9", warning=True)],
                         {"dataset": "my:dataset", "num_rows": 10, "num_graphs": 8,
                          "nodes": {"min": 2, "mean": 5.5, "max": 9}, "tie_fraction": None})
    text = report.format_table()
    out = report._repr_html_()
    assert report.format_table() == text
    assert "2 error(s), 1 warning(s) in dataset my:dataset" in out
    head, rows = _table(out)
    assert head == ["severity", "index", "id", "code", "problem", "fix"]  # file: the dataset
    assert _texts(rows, 1) == ["3", "7", "9"] and _texts(rows, 2) == ["mol_3", "mol_7", "mol_9"]
    assert _texts(rows, 0) == ["error", "error", "warning"]
    assert "#cf222e" in rows[0][0]["style"] and "#9a6700" in rows[2][0]["style"]
    assert rows[0][4]["text"] == "<bad> row" and "<bad>" not in out
    _, summary = _table(out, 1)
    values = dict(zip(_texts(summary, 0), _texts(summary, 1), strict=True))
    assert values["nodes"] == "min=2, mean=5.5, max=9" and values["num_graphs"] == "8"


def test_a_clean_check_report_says_no_problems_found():
    manifest = CheckReport([], {"manifest": "data/manifest.csv", "num_rows": 4})
    out = manifest._repr_html_()
    assert "0 error(s), 0 warning(s) in data/manifest.csv" in out and "no problems found" in out
    assert len(_Tables(out).tables) == 1  # the summary
    rows = CheckReport([DataProblem(5, "g4", "g4.npz", "missing", "add it", "file_missing")],
                       {"manifest": "m.csv"})._repr_html_()
    assert _table(rows)[0] == ["severity", "line", "id", "file", "code", "problem", "fix"]


def _trace(culprit: bool) -> SignalTrace:
    mods = [ModuleTrace("convs.0", "GCNConv(9, 64)", "node", [50, 64], 0.8, 1.1, 0.0, False,
                        1.0, False),
            ModuleTrace("head.0", "Linear(64, 1)", "graph", [8, 1], 0.3, None, 0.0, False, 0.8,
                        False),
            ModuleTrace("head.1", "LayerNorm(1)", "graph", [8, 1], 0.0, None, 1.0, True, 0.3,
                        False)]
    c = Culprit("head.1", "LayerNorm(1)", "module", "constant_output_layer", 0.3, 0.0,
                "head.1 (LayerNorm(1)) maps outputs that vary (std 0.3) to <constant>") \
        if culprit else None
    return SignalTrace(mods if culprit else mods[:2], 8, 50, [8, 1], 0.0 if culprit else 0.3,
                       culprit, c)


def _report(verdict="collapsed", causes=True, notes=()) -> DoctorReport:
    cs = [Cause("constant_output_layer", "the <signal> dies at head.1", "remove it", 0.95,
                "model", verification={"status": "verified", "epoch": 12, "fix": {}}),
          Cause("learning_rate_too_low", "loss moved 0.1%", "raise it", 0.5, "overfit")]
    stages = [Stage("data", "ok", {"graphs": 32, "nested": {"a": 1}}, 0.12),
              Stage("overfit", "failed", {"pairwise_accuracy": 0.51234}, 3.4)]
    return DoctorReport(verdict, cs if causes else [], stages, notes=list(notes),
                        config_diff=[{"key": "training.learning_rate", "yours": 1e-07,
                                      "runbook": 0.005}], seconds=4.2,
                        traces={"init": _trace(verdict != "healthy"),
                                **({"end": _trace(True)} if verdict != "healthy" else {})})


def test_doctor_report_repr_html_is_tables_and_its_text_is_unchanged():
    report = _report()
    text = report.format_text()
    out = report._repr_html_()
    assert str(report) == text
    assert "<table" in out and "DoctorReport(" not in out
    assert "doctor: COLLAPSED" in out and "(4.2 s)" in out
    tables = _Tables(out).tables
    causes = [r for r in tables[0]["rows"] if r]
    assert [r[1]["text"].split("from the")[0] for r in causes] == report.cause_ids
    assert causes[0][3]["text"].startswith("Verified")
    assert "the &lt;signal&gt; dies" in out
    stages = [r for r in tables[1]["rows"] if r]
    assert _texts(stages, 0) == ["data", "overfit"] and "#cf222e" in stages[1][1]["style"]
    assert stages[0][3]["text"] == "graphs=32" and stages[1][3]["text"] == \
        "pairwise_accuracy=0.5123"
    diff = [r for r in tables[2]["rows"] if r]
    assert [c["text"] for c in diff[0]] == ["training.learning_rate", "1e-07", "0.005"]
    # a trace each, at initialisation and after the run; the culprit's row highlighted
    assert "Signal trace at initialisation" in out and "Signal trace after the overfit run" in out
    trace = tables[3]
    rows = [r for r in trace["rows"] if r]
    assert _texts(rows, 0) == ["convs.0", "head.0", "head.1", "scores"]
    marked = [i for i, s in enumerate(trace["row_styles"][1:]) if "background" in s]
    assert marked == [2] and "culprit (constant_output_layer)" in rows[2][5]["text"]
    assert "maps outputs that vary (std 0.3) to &lt;constant&gt;" in out


def test_a_healthy_report_says_no_cause_and_the_trace_in_one_line():
    report = _report("healthy", causes=False)
    out = report._repr_html_()
    assert "no cause of collapse found" in out and "#1a7f37" in out.split("</h3>")[0]
    assert "score std 0.3 across 8 graphs, no layer makes them constant" in out
    assert "Signal trace" not in out  # no table of the trace for a healthy verdict
    still = _report("still_learning", causes=False, notes=["still learning: 0.6 -> 0.8"])
    out = still._repr_html_()
    assert "no cause: the run was still learning when it ended (see the notes)" in out
    assert "<li>still learning: 0.6 -&gt; 0.8</li>" in out
    odd = _report("cannot_fit", causes=False, notes=["scores are [8, 8]"])._repr_html_()
    assert "no cause id matched: see the notes below" in odd


# --------------------------------------------------------------------------- the chart


def _svg(out: str) -> ET.Element:
    root = ET.fromstring(out)
    assert root.tag == f"{SVG}svg"
    return root


def _series(root: ET.Element) -> list[ET.Element]:
    return [p for p in root.iter(f"{SVG}path") if p.get("class") == "series"]


def test_line_chart_is_well_formed_svg_with_a_path_per_series_and_thresholds():
    out = render.line_chart_svg(
        {"pairwise_accuracy": [0.5, 0.7, 0.95], "spearman": [0.1, 0.6, 0.9],
         "score <std>": [0.01, 0.2, 0.4]}, x=[1, 2, 3],
        thresholds={"pairwise_accuracy": 0.9, "spearman": 0.8, "score_std": 0.1},
        title="A & B", y_label="metric")
    root = _svg(out)
    paths = _series(root)
    assert len(paths) == 3 and all(p.get("d").startswith("M") for p in paths)
    assert [p.get("d").count("L") for p in paths] == [2, 2, 2]
    lines = [ln for ln in root.iter(f"{SVG}line") if ln.get("class") == "threshold"]
    assert len(lines) == 3 and all(ln.get("stroke-dasharray") for ln in lines)
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "A & B" in texts and "epoch" in texts and "metric" in texts and "score <std>" in texts
    assert "<script" not in out


@pytest.mark.parametrize("ys", [
    [0.5, float("nan"), 0.7, None, 0.9, float("inf")],  # gaps
    [0.3, 0.3, 0.3],                                      # constant
    [0.42],                                               # a single point
    [float("nan"), None],                                 # nothing to draw
    [],
])
def test_line_chart_survives_gaps_constants_and_single_points(ys):
    root = _svg(render.line_chart_svg({"loss": ys, "flat": [0.0] * len(ys)},
                                      thresholds={"limit": 0.1}))
    paths = _series(root)
    assert len(paths) == 2
    for p in paths:
        d = p.get("d")
        assert "nan" not in d.lower() and "inf" not in d.lower()
        nums = [float(v) for v in d.replace("M", " ").replace("L", " ").replace("l", " ")
                .replace(",", " ").split()]
        assert all(math.isfinite(v) for v in nums)
    finite = [y for y in ys if y is not None and math.isfinite(y)]
    if ys and ys[0] == 0.5:
        assert paths[0].get("d").count("M") == 3  # three runs: [0.5], [0.7], [0.9]
    if len(finite) == 1:
        assert "l0,0" in paths[0].get("d")  # the point alone drawn as a dot


def test_overfit_html_has_the_verdict_and_two_charts():
    history = _history([0.6, 0.95, 0.97, 0.98])
    v = evaluate_run(history)
    out = render.overfit_html("overfit test", v.to_dict(), history,
                              thresholds={"pairwise_accuracy": 0.9, "spearman": 0.8,
                                          "score_std": 0.1})
    assert out.count("<svg") == 2 and "verdict: PASS" in out
    failed = html.unescape(render.overfit_html("t", v.to_dict(), history, _report().to_dict()))
    assert "The doctor's reading of this run's history" in failed
    assert "<code>gatrank.diagnose(model, graphs)</code>" in failed
    assert "<table" in failed.split("The doctor's reading of this run")[1]


# --------------------------------------------------------------------------- imports


def test_render_and_the_verdict_import_no_torch_and_no_pandas():
    code = ("import sys, gatrank.render, gatrank.checks.verdict; "
            "print('torch' in sys.modules, 'pandas' in sys.modules, 'IPython' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert res.stdout.split() == ["False", "False", "False"], res.stderr
