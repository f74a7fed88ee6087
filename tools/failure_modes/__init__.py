"""Every failure mode gatrank handles, as a runnable catalogue, and the page that lists them.

Each :class:`FailureMode` either builds a bad input in a folder and names the ``gatrank``
command line that meets it (a *live* case), or, for faults that need a running process (Ctrl-C,
SIGTERM, a crash mid-write), describes what the user sees and names the test that checks it.
``python -m tools.failure_modes docs/failure_modes.md`` runs every live case through the real
CLI and writes the page from what came out; ``tests/tools/test_failure_modes.py`` runs the same
cases, checks each against its expectations, and checks the page still says what the CLI says.

Modules: ``builders`` (bad inputs written into a folder), ``cases`` (the catalogue), ``run``
(one case through the CLI), ``page`` (the markdown page).
"""

from tools.failure_modes.builders import MARKER
from tools.failure_modes.cases import CASES, FailureMode
from tools.failure_modes.page import main, render_markdown, section_output
from tools.failure_modes.run import CaseRun, run_case, shown_output

__all__ = [
    "FailureMode",
    "CaseRun",
    "CASES",
    "MARKER",
    "run_case",
    "shown_output",
    "render_markdown",
    "section_output",
    "main",
]
