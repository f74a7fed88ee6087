"""The suite: runs the five notebooks headlessly with papermill and writes the reports."""

from gatrank.suite.export import export_html
from gatrank.suite.index import render_index
from gatrank.suite.kernel import kernel_manager_class
from gatrank.suite.run import (
    NOTEBOOKS,
    NotebookResult,
    SuiteResult,
    default_out_dir,
    notebook_parameters,
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
