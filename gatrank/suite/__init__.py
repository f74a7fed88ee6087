"""The suite: runs the five notebooks headlessly with papermill and writes the reports."""

from gatrank.suite.run import (
    NOTEBOOKS,
    NotebookResult,
    SuiteResult,
    default_out_dir,
    export_html,
    kernel_manager_class,
    notebook_parameters,
    render_index,
    run_suite,
)

__all__ = [
    "NOTEBOOKS",
    "NotebookResult",
    "SuiteResult",
    "run_suite",
    "kernel_manager_class",
    "notebook_parameters",
    "export_html",
    "render_index",
    "default_out_dir",
]
