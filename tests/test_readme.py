"""The README's "Your code as it is" section runs as written: its Python blocks and its commands,
one after another in one empty folder (later blocks read what earlier ones wrote)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Your code as it is"
_BLOCK = re.compile(r"```(python|bash)\n(.*?)```", re.S)


def section_blocks(text: str, title: str = SECTION) -> list[tuple[str, str]]:
    """``(language, code)`` of each fenced block between ``title`` and the next ``## ``."""
    start = text.index(title)
    end = text.find("\n## ", start + len(title))
    return _BLOCK.findall(text[start:end if end >= 0 else None])


def test_the_section_has_the_examples_the_issue_asks_for():
    blocks = section_blocks(README.read_text())
    code = "\n".join(c for _, c in blocks)
    assert [lang for lang, _ in blocks] == ["python", "bash", "python", "bash"]
    for needed in ("Monitor(model, optimizer=optimizer", "monitor.step(scores, batch.y, loss)",
                   "--dataset molecules.pt", "--model torch_geometric.nn.models:AttentiveFP",
                   "--model-kwargs", "gatrank verdict runs/mine"):
        assert needed in code, needed


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent),
                                                   os.environ.get("PATH", "")])}
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.slow
def test_the_readme_examples_run_as_written(tmp_path):
    for lang, code in section_blocks(README.read_text()):
        if lang == "python":
            res = _run([sys.executable, "-c", code], tmp_path)
            assert res.returncode == 0, f"{code}\n{res.stderr[-3000:]}"
            continue
        for line in code.splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            res = _run(shlex.split(line), tmp_path)
            assert res.returncode == 0, f"{line}\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
    # what the examples say they do
    records = [json.loads(ln) for ln in
               (tmp_path / "runs" / "mine" / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["epoch"] == 1 and records[-1]["epoch"] == 100
    assert len(list((tmp_path / "nb").rglob("*.ipynb"))) == 5
