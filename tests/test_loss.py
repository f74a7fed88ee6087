"""The runbook's Step 2A, literally: ``cd tests && python test_loss.py`` runs the loss tests.

The loss tests themselves are in test_losses.py and test_losses_chunked.py (named after
gatrank/losses.py); run as a script, this file runs them with pytest and exits with its status.
Collected by pytest it holds only the test of that command, so no loss test runs twice.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
LOSS_TESTS = ("test_losses.py", "test_losses_chunked.py")


def main(argv: list[str]) -> int:
    """Run the loss tests verbosely (the runbook names two it expects to pass); ``argv`` is
    passed on to pytest (``python test_loss.py -k gradients``)."""
    return int(pytest.main([*(str(HERE / f) for f in LOSS_TESTS), "-v", *argv]))


@pytest.mark.slow
def test_runbook_step_2a_runs_the_loss_tests():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "test_loss.py", "-p", "no:cacheprovider"], cwd=HERE,
                         capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    for name in ("test_gradients_exist PASSED", "test_perfect_vs_reversed_ordering PASSED"):
        assert name in res.stdout
    assert "test_losses_chunked.py::" in res.stdout and " passed" in res.stdout.splitlines()[-1]
    assert "test_loss.py::" not in res.stdout  # the command's own test is not run again


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
