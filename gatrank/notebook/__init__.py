"""The one module the notebooks import (``from gatrank import notebook as nb``): a run's
session, display helpers, widgets and live curves, what each notebook records, and the
measurements, training, verdict, doctor and evaluation the notebooks call, re-exported from where
they live so a notebook needs no other gatrank import but :mod:`gatrank.plots`."""

from gatrank.checks.steps import (
    data_checks,
    embedding_check,
    evaluation_checks,
    init_loss_checks,
    init_loss_per_batch,
    loss_gap_curves,
    loss_tests,
    training_checks,
)
from gatrank.checks.verdict import THRESHOLDS, evaluate_verdict, stop_at_verdict
from gatrank.config import overfit_config
from gatrank.data import check_manifest
from gatrank.datasets import check_data
from gatrank.doctor import diagnose_history, judge_run
from gatrank.evaluate import evaluate_checkpoint
from gatrank.losses import LN2
from gatrank.notebook.display import (
    RENDERER,
    checks_table,
    config_table,
    setup,
    show,
    show_causes,
    show_checks,
    show_fixes,
    show_grouped,
    show_results,
    sortable_table,
)
from gatrank.notebook.results import (
    baseline_table,
    check_dicts,
    checkpoint_check,
    eval_results,
    fix_rows,
    full_train_results,
    init_loss_metrics,
    margins_table,
    overfit_results,
    training_outcome,
)
from gatrank.notebook.runs import run_checkpoint, train_or_read, verify_fixes
from gatrank.notebook.session import (
    STEPS,
    NotebookRun,
    checkpoint_for_eval,
    project_root,
    resolve_config,
    resolve_path,
    resolve_run_dir,
    start,
)
from gatrank.notebook.trace import initial_model, overfit_traces
from gatrank.notebook.widgets import (
    LiveCurves,
    draw_graph,
    epoch_explorer,
    node_labels,
    sample_browser,
    topk_explorer,
)
from gatrank.training import train

__all__ = [
    # session
    "STEPS",
    "NotebookRun",
    "project_root",
    "resolve_path",
    "resolve_run_dir",
    "resolve_config",
    "start",
    "checkpoint_for_eval",
    "train_or_read",
    "run_checkpoint",
    "verify_fixes",
    # the signal trace
    "initial_model",
    "overfit_traces",
    # display
    "RENDERER",
    "setup",
    "show",
    "checks_table",
    "show_checks",
    "show_causes",
    "show_fixes",
    "show_grouped",
    "show_results",
    "config_table",
    "sortable_table",
    # widgets
    "LiveCurves",
    "node_labels",
    "draw_graph",
    "sample_browser",
    "epoch_explorer",
    "topk_explorer",
    # what the notebooks record
    "check_dicts",
    "init_loss_metrics",
    "overfit_results",
    "fix_rows",
    "training_outcome",
    "baseline_table",
    "checkpoint_check",
    "full_train_results",
    "eval_results",
    "margins_table",
    # re-exported from where they live
    "check_manifest",
    "check_data",
    "data_checks",
    "loss_tests",
    "loss_gap_curves",
    "init_loss_per_batch",
    "init_loss_checks",
    "embedding_check",
    "training_checks",
    "evaluation_checks",
    "THRESHOLDS",
    "evaluate_verdict",
    "stop_at_verdict",
    "overfit_config",
    "train",
    "diagnose_history",
    "judge_run",
    "evaluate_checkpoint",
    "LN2",
]
