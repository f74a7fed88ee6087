"""The catalogue: every failure mode gatrank handles, live (built and run) or described."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from tools.failure_modes.builders import (
    _TINY,
    MARKER,
    _bad_json,
    _check,
    _config_case,
    _cut_checkpoint,
    _evil_checkpoint,
    _evil_graph,
    _evil_yaml,
    _good,
    _json_graph,
    _manifest,
    _mixed,
    _npz_pickled,
    _outside,
    _pt,
    _rows,
    _tiny_with,
    _train,
    _trained_run,
    _truncated,
    _x,
)

__all__ = ["FailureMode", "CASES"]


@dataclass(frozen=True)
class FailureMode:
    """One way things go wrong, and what gatrank does about it.

    ``build(folder) -> argv`` writes the bad input into ``folder`` and returns the ``gatrank``
    arguments that meet it; ``None`` for faults checked only by ``tested_by``. ``expect`` are
    fragments the output must contain; ``row`` is ``(line, id, file)`` a data problem must name
    on one output line (``file`` relative to the folder).
    """

    id: str
    area: str
    title: str
    exit_code: int
    build: Callable[[Path], list[str]] | None = None
    expect: tuple[str, ...] = ()
    row: tuple[int, str, str] | None = None
    sees: str = ""
    """What the user sees, for cases without ``build``."""
    tested_by: tuple[str, ...] = ()
    """``tests/file.py::test_name`` entries that check this behaviour."""
    excerpt: str = "all"
    """Which output the page shows: ``all`` (stdout then stderr), or ``dropped`` (only the
    dropped-rows block of ``train --on-error skip``)."""
    notes: str = ""



CASES: list[FailureMode] = [
    # ------------------------------------------------------------------ the manifest itself
    FailureMode("manifest_not_found", "manifest", "the manifest path does not exist", 1,
                lambda d: _train(d, d / "nope.csv"), ("manifest_not_found", "nope.csv")),
    FailureMode("manifest_is_a_folder", "manifest", "the manifest path is a folder", 1,
                lambda d: _train(d, d), ("manifest_not_found",)),
    FailureMode("empty_file", "manifest", "an empty manifest file", 1,
                lambda d: _train(d, _manifest(d, "")), ("empty_manifest",)),
    FailureMode("header_only", "manifest", "a header and no rows", 1,
                lambda d: _train(d, _manifest(d, "id,y,path\n")), ("empty_manifest", "no data")),
    FailureMode("missing_y_column", "manifest", "no `y` column", 1,
                lambda d: _train(d, _rows(d, header="id,target,path")),
                ("missing_y_column", "target")),
    FailureMode("missing_source_column", "manifest", "neither a `path` nor a `smiles` column", 1,
                lambda d: _train(d, _manifest(d, "id,y,file\na,1,a.pt\n")),
                ("missing_source_column",)),
    FailureMode("not_utf8", "manifest", "a manifest that is not UTF-8 (Latin-1 from Excel)", 1,
                lambda d: _train(d, _manifest(d, "id,y,smiles\ncaf\xe9,1,CCO\n".encode("latin-1"))),
                ("unreadable_manifest", "UTF-8")),
    FailureMode("wrong_field_count", "manifest", "a row with more fields than the header", 1,
                lambda d: _train(d, _rows(d, "wide,5,g0.pt,extra")), ("wrong_field_count",),
                row=(6, "wide", "manifest.csv")),
    FailureMode("bom", "manifest", "a UTF-8 byte-order mark (accepted)", 0,
                lambda d: _check(_manifest(d, b"\xef\xbb\xbf" + "\n".join(
                    ["id,y,path", *_good(d)]).encode() + b"\n")),
                ("0 error(s)", "num_graphs: 4"),
                notes="The BOM is stripped, so the first column is still `id`."),
    FailureMode("crlf", "manifest", "Windows (CRLF) line endings (accepted)", 0,
                lambda d: _check(_manifest(d, "\r\n".join(["id,y,path", *_good(d)]) + "\r\n")),
                ("0 error(s)", "num_graphs: 4")),
    FailureMode("semicolon", "manifest", "a semicolon-separated file (accepted)", 0,
                lambda d: _check(_manifest(d, "\n".join(
                    r.replace(",", ";") for r in ["id,y,path", *_good(d)]) + "\n")),
                ("0 error(s)", "num_graphs: 4"),
                notes="The delimiter (`,` `;` or tab) is sniffed from the header line."),
    # ------------------------------------------------------------------ rows
    FailureMode("nan_y", "row", "`y` is NaN", 1,
                lambda d: _train(d, _rows(d, "bad,nan,g0.pt")), ("nan_target",),
                row=(6, "bad", "manifest.csv")),
    FailureMode("inf_y", "row", "`y` is infinite", 1,
                lambda d: _train(d, _rows(d, "bad,inf,g0.pt")), ("inf_target",),
                row=(6, "bad", "manifest.csv")),
    FailureMode("non_numeric_y", "row", "`y` is not a number", 1,
                lambda d: _train(d, _rows(d, "bad,high,g0.pt")), ("non_numeric_target", "high"),
                row=(6, "bad", "manifest.csv")),
    FailureMode("empty_y", "row", "`y` is empty", 1,
                lambda d: _train(d, _rows(d, "bad,,g0.pt")), ("missing_target",),
                row=(6, "bad", "manifest.csv")),
    FailureMode("duplicate_id", "row", "two rows share an id", 1,
                lambda d: _train(d, _rows(d, "g1,7,g0.pt")), ("duplicate_id", "line 3"),
                row=(6, "g1", "manifest.csv")),
    FailureMode("both_sources", "row", "a row with both `path` and `smiles`", 1,
                lambda d: _train(d, _rows(d, "both,5,g0.pt,CCO", header="id,y,path,smiles")),
                ("both_sources",), row=(6, "both", "manifest.csv")),
    FailureMode("no_source", "row", "a row with neither `path` nor `smiles`", 1,
                lambda d: _train(d, _rows(d, "none,5,,", header="id,y,path,smiles")),
                ("no_source",), row=(6, "none", "manifest.csv")),
    FailureMode("unknown_split", "row", "a `split` value other than train/val/test", 1,
                lambda d: _train(d, _manifest(d, "id,y,smiles,split\na,1,CCO,train\n"
                                              "b,2,CCCO,training\nc,3,CCCCO,test\n")),
                ("unknown_split", "'train'"), row=(3, "b", "manifest.csv"),
                notes="Common synonyms get a suggestion (`training` -> `train`)."),
    FailureMode("singleton_group", "row", "a `group` with one member (a warning only)", 0,
                lambda d: _check(_manifest(d, "id,y,smiles,group\na,1,CCO,q1\nb,2,CCCO,q1\n"
                                              "c,3,CCCCO,q2\n")),
                ("singleton_group", "1 warning(s)"), row=(4, "c", "manifest.csv"),
                notes="It forms no ranking pairs; training goes on and logs it."),
    FailureMode("path_outside_root", "security", "a `path` that leaves the manifest's folder", 1,
                lambda d: _outside(d), ("path_outside_root", "../shared.pt"),
                row=(6, "out", "data/manifest.csv")),
    FailureMode("path_outside_root_allowed", "security",
                "the same path with `--allow-outside-root` (accepted)", 0,
                lambda d: _outside(d, "--allow-outside-root"), ("0 error(s)", "num_graphs: 5")),
    FailureMode("absolute_path", "security", "an absolute `path`", 1,
                lambda d: _train(d, _rows(d, f"abs,9,{d.resolve() / 'g0.pt'}")),
                ("path_outside_root",)),
    # ------------------------------------------------------------------ graph files
    FailureMode("missing_file", "graph file", "the graph file does not exist", 1,
                lambda d: _train(d, _rows(d, "gone,9,gone.pt")), ("missing_file",),
                row=(6, "gone", "gone.pt")),
    FailureMode("truncated_file", "graph file", "a truncated `.pt` file", 1,
                _truncated, ("unreadable_file",), row=(6, "cut", "cut.pt")),
    FailureMode("unreadable_json", "graph file", "a `.json` graph that is not valid JSON", 1,
                _bad_json, ("unreadable_file",),
                row=(6, "bad", "bad.json")),
    FailureMode("unknown_extension", "graph file", "a graph file extension gatrank cannot read",
                1, lambda d: _train(d, _rows(d, "txt,9,g.txt")), ("unknown_extension", ".txt"),
                row=(6, "txt", "manifest.csv")),
    FailureMode("invalid_smiles", "graph file", "an invalid SMILES", 1,
                lambda d: _train(d, _manifest(d, "id,y,smiles\na,1,CCO\nb,2,C1CC\nc,3,CCCO\n")),
                ("invalid_smiles", "C1CC"), row=(3, "b", "manifest.csv")),
    FailureMode("zero_nodes", "graph file", "a graph with no nodes", 1,
                lambda d: _train(d, _rows(d, "empty,9," + _pt(
                    d, "empty.pt", torch.zeros(0, 2), torch.zeros(2, 0, dtype=torch.long)))),
                ("empty_graph",), row=(6, "empty", "empty.pt")),
    FailureMode("zero_edges", "graph file", "a graph with no edges", 1,
                lambda d: _train(d, _rows(d, "lone,9," + _pt(
                    d, "lone.pt", _x(3), torch.zeros(2, 0, dtype=torch.long)))),
                ("no_edges",), row=(6, "lone", "lone.pt")),
    FailureMode("edge_index_out_of_range", "graph file", "an edge to a node that does not exist",
                1, lambda d: _train(d, _rows(d, "oob,9," + _pt(
                    d, "oob.pt", _x(3), torch.tensor([[0, 1], [1, 7]])))),
                ("edge_index_out_of_range", "node 7"), row=(6, "oob", "oob.pt")),
    FailureMode("non_integer_edge_index", "graph file", "edge indices that are not integers", 1,
                lambda d: _train(d, _rows(d, "frac,9," + _json_graph(
                    d, "frac.json", {"x": [[1.0], [2.0], [3.0]],
                                     "edge_index": [[0, 1.5], [1, 2]]}))),
                ("non_integer_edge_index",), row=(6, "frac", "frac.json")),
    FailureMode("transposed_edge_index", "graph file", "`edge_index` stored as [E, 2]", 1,
                lambda d: _train(d, _rows(d, "tr,9," + _pt(
                    d, "tr.pt", _x(3), torch.tensor([[0, 1], [1, 2], [2, 0]])))),
                ("bad_edge_index_shape", "transposed"), row=(6, "tr", "tr.pt")),
    FailureMode("feature_width_mismatch", "graph file",
                "node features of a different width than the other graphs", 1,
                lambda d: _train(d, _rows(d, "wide,9," + _pt(d, "wide.pt", _x(4, width=5)))),
                ("feature_width_mismatch", "5 columns"), row=(6, "wide", "wide.pt")),
    FailureMode("nan_features", "graph file", "NaN in node features", 1,
                lambda d: _train(d, _rows(d, "nanx,9," + _pt(
                    d, "nanx.pt", torch.tensor([[1.0, float("nan")], [2.0, 3.0], [4.0, 5.0]])))),
                ("nonfinite_features", "node 0, column 1"), row=(6, "nanx", "nanx.pt")),
    FailureMode("many_problems", "row", "several bad rows: all are listed at once", 1,
                lambda d: _train(d, _mixed(d)),
                ("3 problems", "nan_target", "missing_file", "unknown_extension")),
    FailureMode("on_error_skip", "row", "`train --on-error skip` drops the bad rows and says so",
                0, lambda d: _train(d, _mixed(d), "--on-error", "skip", "--out", str(d / "run")),
                ("dropped 3 manifest row(s)", "line 6  id n1", "line 7  id n2", "line 8  id n3"),
                excerpt="dropped",
                notes="`summary.json` lists the same rows under `dropped_rows` "
                      "(`num_dropped_rows: 3`)."),
    FailureMode("check_on_error_skip", "row", "`check-data --on-error skip` on the same rows", 0,
                lambda d: _check(_mixed(d), "--on-error", "skip"),
                ("3 error(s)", "would drop 3 row(s) (lines 6, 7, 8) and keep 4 graphs")),
    # ------------------------------------------------------------------ untrusted files
    FailureMode("malicious_pt_graph", "security",
                "a `.pt` graph file crafted to run code when unpickled", 1, _evil_graph,
                ("unsafe_file", "NOT loaded"), row=(6, "evil", "evil.pt"),
                notes=f"The payload would create `{MARKER}`; the tests check it does not exist."),
    FailureMode("pickled_npz", "security", "an `.npz` graph holding pickled objects", 1,
                _npz_pickled, ("unsafe_file",), row=(6, "obj", "obj.npz")),
    FailureMode("malicious_checkpoint_eval", "security",
                "`gatrank eval` on a checkpoint crafted to run code", 1,
                lambda d: ["eval", "--checkpoint", str(_evil_checkpoint(d))],
                ("unsafe file refused", "NOT loaded"),
                notes="A `torch.save` checkpoint, gatrank 0.1's format, still read with "
                      "`weights_only=True` and the allowlist; the checkpoints gatrank writes now "
                      "are safetensors + JSON and are read without unpickling anything."),
    FailureMode("malicious_checkpoint_resume", "security",
                "`gatrank train --resume` on a checkpoint crafted to run code", 1,
                lambda d: ["train", "--resume", str(_evil_checkpoint(d)), "--no-progress"],
                ("unsafe file refused", "NOT loaded")),
    FailureMode("pickle_in_checkpoint", "security",
                "a gatrank checkpoint with a pickle payload hidden in a tensor or a string", 0,
                sees="a checkpoint that loads like any other, and nothing run: it is "
                     "safetensors tensors and JSON, no byte of it is ever unpickled, so the "
                     "payload stays data.",
                tested_by=("tests/training/test_checkpoint.py::"
                           "test_a_pickle_inside_a_checkpoint_is_never_unpickled",)),
    FailureMode("torch_too_old", "security",
                "a `.pt` graph file or an old-format checkpoint, with torch older than 2.10", 1,
                sees="`unsafe file refused: g0.pt was NOT loaded: torch 2.5.1 is older than 2.10, "
                     "and its torch.load(weights_only=True) is unsafe on files from others: "
                     "CVE-2025-32434 (...; fixed in torch 2.6); CVE-2026-24747 (...; fixed in "
                     "torch 2.10). Upgrade torch: pip install --upgrade 'torch>=2.10'`, once for "
                     "the run rather than once per row, before any file is read. The "
                     "checkpoints gatrank writes (safetensors) still load: they need no "
                     "`torch.load`.",
                tested_by=("tests/data/test_safe_load.py::"
                           "test_an_old_torch_reads_no_graph_file_and_says_why_once",
                           "tests/data/test_safe_load.py::"
                           "test_an_old_torch_refuses_old_checkpoints_and_reads_safetensors_ones",
                           "tests/data/test_safe_load.py::"
                           "test_torch_versions_compare_as_versions")),
    FailureMode("malicious_yaml", "security", "a YAML config with a Python object tag", 2,
                _evil_yaml, ("config error", "not valid YAML"),
                notes="YAML is read with `yaml.safe_load`, which refuses `!!python/...` tags."),
    # ------------------------------------------------------------------ config
    FailureMode("config_unknown_key", "config", "an unknown (misspelt) config key", 2,
                _config_case("loss:\n  temprature: 0.5\n"),
                ("loss.temprature", "allowed in 'loss'", "'temperature'")),
    FailureMode("config_wrong_type", "config", "a config value of the wrong type", 2,
                _config_case("training:\n  batch_size: sixteen\n"),
                ("training.batch_size", "'sixteen'", "expected int")),
    FailureMode("config_learning_rate", "config", "learning rate <= 0", 2,
                _config_case("training:\n  learning_rate: 0\n"),
                ("training.learning_rate", "= 0", "allowed > 0")),
    FailureMode("config_negative_eps", "config", "a negative `tie_eps`", 2,
                _config_case("loss:\n  tie_eps: -1.0e-6\n"), ("loss.tie_eps", "allowed >= 0")),
    FailureMode("config_batch_size", "config", "batch size < 2", 2,
                _config_case("training:\n  batch_size: 1\n"),
                ("training.batch_size", "= 1", "allowed >= 2")),
    FailureMode("overfit_n_too_small", "config", "`--overfit-n 1`", 2,
                lambda d: _train(d, _rows(d), "--overfit-n", "1"),
                ("--overfit-n 1", "allowed 0 (off) or >= 2")),
    FailureMode("config_not_yaml", "config", "a config file that is not valid YAML", 2,
                _config_case("training: [1, 2\n"), ("config error", "not valid YAML")),
    FailureMode("config_missing", "config", "a config file that does not exist", 2,
                lambda d: _train(d, _rows(d), "--config", str(d / "nope.yaml")),
                ("config file not found",)),
    FailureMode("model_import_string", "config", "a `--model` import string that does not import",
                2, lambda d: _train(d, _rows(d), "--model", "nosuch_pkg.models:Net"),
                ("cannot import module 'nosuch_pkg.models'",)),
    # ------------------------------------------------------------------ training
    FailureMode("nonfinite_stop", "training",
                "the loss turns NaN (here: learning rate 1e30, clipping off)", 1,
                lambda d: _config_case(_TINY.replace(
                    "training:\n", "training:\n  learning_rate: 1.0e+30\n  grad_clip: 0\n"))(d)
                + ["--epochs", "3"],
                ("training stopped", "non-finite loss at epoch 2, batch 0", "after epoch 1"),
                notes="With `--out`, `last.pt` holds the last complete epoch (never NaN weights), "
                      "`best.pt` is not overwritten and `summary.json` has status `nonfinite`."),
    FailureMode("nonfinite_skip", "training",
                "`training.nonfinite: skip`: a NaN/Inf loss or gradient in some batches", 0,
                sees="a warning per skipped step: `non-finite loss at epoch E, batch B (...); step "
                     "skipped (training.nonfinite=skip)`; the count is in every record and in "
                     "`summary.json` as `skipped_steps`. If every step of an epoch is skipped, "
                     "or the weights themselves are NaN, training stops as above.",
                tested_by=("tests/training/test_epoch.py::test_skip_mode_counts_skipped_steps",
                           "tests/training/test_epoch.py::test_skip_mode_gives_up_when_no_step_is_finite",
                           "tests/training/test_epoch.py::test_inf_gradient_with_finite_loss_is_caught")),
    FailureMode("ctrl_c", "training", "Ctrl-C during training", 130,
                sees="`Ctrl-C during epoch E; kept the state after epoch E-1.` and `continue "
                     "with: gatrank train --resume RUN/last.pt`; `last.pt` and `summary.json` "
                     "(status `interrupted`) are written.",
                tested_by=("tests/training/test_state.py::test_interrupt_and_resume_equals_uninterrupted",
                           "tests/training/test_state.py::test_interrupt_mid_epoch_drops_the_partial_epoch")),
    FailureMode("sigterm", "training", "SIGTERM (`kill`, a job scheduler's stop)", 130,
                sees="the same as Ctrl-C, with `SIGTERM during epoch E`.",
                tested_by=("tests/training/test_state.py::test_sigterm_in_process_resumes_exactly",
                           "tests/training/test_state.py::test_sigterm_subprocess_saves_and_resumes")),
    FailureMode("resume_config_changed", "training",
                "`--resume` with a config that changes the trajectory", 2,
                lambda d: ["train", "--resume", str(_trained_run(d)), "--no-progress",
                           "--config", str(_tiny_with(d, "  learning_rate: 0.5\n"))],
                ("cannot resume", "training.learning_rate: 0.001 -> 0.5")),
    FailureMode("resume_not_resumable", "training", "`--resume` from a `best.pt`", 2,
                lambda d: ["train", "--resume", str(_trained_run(d).parent / "best.pt"),
                           "--no-progress"],
                ("cannot be resumed", "resume from the run's last.pt")),
    FailureMode("checkpoint_cut_short", "training",
                "`gatrank eval` on a checkpoint whose copy was cut short", 2,
                lambda d: ["eval", "--checkpoint", str(_cut_checkpoint(d))],
                ("run/best.pt is a damaged gatrank checkpoint", "use the run's other checkpoint")),
    FailureMode("resume_missing", "training", "`--resume` from a file that does not exist", 2,
                lambda d: ["train", "--resume", str(d / "run" / "last.pt")],
                ("no such file",)),
    FailureMode("crash_mid_write", "training", "a crash while a checkpoint or report is written", 0,
                sees="nothing: files are written to a temporary file and renamed, so the previous "
                     "`last.pt` / `summary.json` stays intact and no temporary file is left.",
                tested_by=("tests/test_io.py::test_failed_write_keeps_the_previous_file",
                           "tests/training/test_checkpoint.py::test_crash_while_saving_a_checkpoint_keeps_the_old_one")),
    # ------------------------------------------------------------------ notebook suite
    FailureMode("notebook_fails", "suite", "a notebook of `gatrank suite` fails (e.g. on bad data)",
                1,
                sees="`[1/5] 01_data_checks  ERROR  DataError: ...` as it runs; its executed "
                     "notebook keeps the traceback with papermill's pointer to the failing cell "
                     "at the top, its HTML opens with a red banner quoting the error, "
                     "`index.html` marks it ERROR, the other notebooks still run and keep their "
                     "reports, and the suite exits 1.",
                tested_by=("tests/suite/test_run.py::"
                           "test_notebook_failing_on_bad_data_is_reported_and_the_rest_kept",)),
    # ------------------------------------------------------------------ command line
    FailureMode("unknown_flag", "cli", "an unknown command-line flag", 2,
                lambda d: ["train", "--lr", "0.1"], ("unrecognized arguments: --lr",),
                notes="argparse's usage message; no traceback."),
]

