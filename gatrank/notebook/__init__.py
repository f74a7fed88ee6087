"""The one module the notebooks import: a run's session, display helpers, widgets, live curves."""

from gatrank.notebook.display import (
    RENDERER,
    checks_table,
    config_table,
    setup,
    show,
    show_causes,
    show_checks,
    show_grouped,
    show_results,
    sortable_table,
)
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
from gatrank.notebook.widgets import (
    LiveCurves,
    draw_graph,
    epoch_explorer,
    node_labels,
    sample_browser,
    topk_explorer,
)

__all__ = [
    "RENDERER",
    "STEPS",
    "NotebookRun",
    "setup",
    "show",
    "project_root",
    "resolve_path",
    "resolve_run_dir",
    "resolve_config",
    "start",
    "checkpoint_for_eval",
    "checks_table",
    "show_checks",
    "show_causes",
    "show_grouped",
    "show_results",
    "config_table",
    "sortable_table",
    "LiveCurves",
    "node_labels",
    "draw_graph",
    "sample_browser",
    "epoch_explorer",
    "topk_explorer",
]
