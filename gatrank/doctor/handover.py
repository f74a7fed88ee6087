"""Hand-over of a verified fix: ``gatrank doctor --write-fix DIR`` writes what the user applies
to their own setup, from the report alone.

- ``config.yaml``: the user's settings with the fix's config keys changed, as the keys that
  differ from gatrank's defaults (the fix's keys always, marked), loadable by ``--config``;
- ``apply_fix.py``: for a data fix, a short script that makes the change to the user's data
  (a fixed ``manifest_fixed.csv`` beside their manifest, or a function over a list of PyG
  ``Data``); for a model fix, the edit to make to their model (``fix(model)``; for a call in
  their code made the identity, also the file and line to edit);
- ``fix.json``: the cause, its evidence and the verification record.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from gatrank.config import Config, nest, settings_set
from gatrank.doctor.report import Cause, DoctorReport
from gatrank.io import atomic_write_text, write_json

__all__ = ["verified_cause", "fix_config", "write_fix"]

_DOCTOR_KEYS = {("training", "enable_debug_logs")}
"""Keys the doctor sets for its own runs, never the user's."""


def verified_cause(report: DoctorReport) -> Cause | None:
    """The first cause whose fix the doctor verified, or None."""
    return next((c for c in report.causes if c.verified), None)


def fix_config(report: DoctorReport, cause: Cause, *, only_changes: bool = False
               ) -> dict[str, dict[str, Any]]:
    """The user's config (``report.config``) with the verified fix's keys applied, as nested
    sections holding only the keys that differ from gatrank's defaults and the fix's own
    (``only_changes``: the fix's keys alone, to paste into a config of one's own)."""
    changes = cause.verification["fix"].get("config", {}) if cause.verification else {}
    if only_changes:
        return nest(changes)
    cfg = Config.from_dict(report.config or {}).updated(dict(changes))
    # the fix's keys count as set, like a config file's (settings_set)
    mine = settings_set(cfg, list(changes))
    return nest({k: v for k, v in mine.items()
                 if k in changes or tuple(k.split(".")) not in _DOCTOR_KEYS})


def write_fix(report: DoctorReport, out_dir: str | Path) -> list[Path]:
    """Write the first verified fix into ``out_dir``; the files written (none when no fix was
    verified: the caller says so)."""
    cause = verified_cause(report)
    if cause is None:
        return []
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rec = cause.verification or {}
    fix = rec.get("fix", {})
    written = []
    config = fix_config(report, cause)
    changed = ", ".join(fix.get("config", {})) or "none (your settings as they are)"
    head = (f"# gatrank doctor --write-fix: the fix of {cause.id}, verified: {_summary(rec)}\n"
            f"# keys the fix changes: {changed}; the others are your settings that differ from\n"
            "# gatrank's defaults. Use it with: gatrank train --config config.yaml ...\n")
    atomic_write_text(out / "config.yaml",
                      head + (yaml.safe_dump(config, sort_keys=False) if config else "{}\n"))
    written.append(out / "config.yaml")
    script = _script(fix, report.setup.get("source", ""))
    if script:
        atomic_write_text(out / "apply_fix.py", script)
        written.append(out / "apply_fix.py")
    write_json(out / "fix.json", {"cause": cause.id, "evidence": cause.evidence,
                                  "fix": cause.fix, "verification": rec,
                                  "setup": report.setup})
    written.append(out / "fix.json")
    return written


def _summary(rec: dict[str, Any]) -> str:
    at = f" at epoch {rec['epoch']}" if rec.get("epoch") else \
        f", learning after {rec.get('epochs_run')} epochs"
    return (f"{rec['fix']['label']} passes{at} (pairwise accuracy {rec.get('pairwise_accuracy')}, "
            f"Spearman {rec.get('spearman')}, score std {rec.get('score_std')})")


def _script(fix: dict[str, Any], source: str) -> str:
    """``apply_fix.py`` for a data or model fix; empty for a config fix."""
    detail = fix.get("detail", {})
    doc = f'"""gatrank doctor --write-fix: {fix["label"]}."""\n'
    if fix.get("data") in ("drop_rows", "standardize_y", "ungroup") and source.endswith(".csv"):
        lines = [doc, "from pathlib import Path", "", "import pandas as pd", "",
                 f"manifest = Path({source!r})", "table = pd.read_csv(manifest)"]
        if fix["data"] == "drop_rows":
            lines.append(f"table = table[~table['id'].astype(str).isin({detail.get('ids', [])!r})]")
        elif fix["data"] == "standardize_y":
            lines.append(f"table['y'] = (table['y'] - {detail['y_mean']!r}) / {detail['y_std']!r}")
        else:
            lines.append("table = table.drop(columns=['group'])")
        lines += ["# beside the original, so the graph files' relative paths still resolve",
                  "table.to_csv(manifest.with_name('manifest_fixed.csv'), index=False)",
                  "print('wrote', manifest.with_name('manifest_fixed.csv'))", ""]
        return "\n".join(lines)
    if fix.get("data"):
        return doc + _DATA_FUNCTIONS[fix["data"]].format(**{k: repr(v) for k, v in
                                                           detail.items()})
    if fix.get("edit", "").startswith("identity_call:"):
        code = detail.get("code") or ""
        return doc + _IDENTITY_CALL.format(
            op=detail.get("op", ""), file=detail.get("file", ""), line=detail.get("line", ""),
            code=f"\n#     {code}" if code else "", spec=fix["edit"])
    if fix.get("edit") or fix.get("model"):
        return doc + _MODEL_EDITS.get(fix.get("edit", "").split(":")[0], _SWAP).format(
            path=fix.get("edit", "").partition(":")[2])
    return ""


_DATA_FUNCTIONS = {
    "drop_rows": '''
def fix(graphs):
    """Leave out the graphs the doctor found problems in (by their id)."""
    drop = set({ids})
    return [g for g in graphs if str(getattr(g, "id", "")) not in drop]
''',
    "standardize_y": '''
def fix(graphs):
    """Targets standardized with the training graphs' mean and std."""
    for g in graphs:
        g.y = (g.y - {y_mean}) / {y_std}
    return graphs
''',
    "ungroup": '''
def fix(graphs):
    """No groups: every graph is ranked against every other."""
    for g in graphs:
        if "group" in g:
            del g.group
    return graphs
''',
    "degree_features": '''import torch
from torch_geometric.utils import degree


def fix(graphs):
    """One-hot node degree (0 to {max_degree}) appended to each graph's node features."""
    for g in graphs:
        deg = degree(g.edge_index[1], g.num_nodes).long().clamp(max={max_degree})
        g.x = torch.cat([g.x, torch.nn.functional.one_hot(deg, {max_degree} + 1).to(g.x.dtype)],
                        dim=1)
    return graphs
''',
}
"""``fix(graphs)`` over a list of PyG ``Data``, for data that is not a manifest's column."""

_MODEL_EDITS = {
    "identity": '''import torch


def fix(model):
    """{path} replaced by an identity (the signal trace found it makes every score equal)."""
    parent, _, name = "{path}".rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, torch.nn.Identity())
    return model
''',
    "reinit": '''
def fix(model):
    """Every layer back to its default initialisation."""
    for m in model.modules():
        if m is not model and callable(getattr(m, "reset_parameters", None)):
            m.reset_parameters()
    return model
''',
    "unfreeze": '''
def fix(model):
    """Every parameter trainable (build the optimizer after this)."""
    for p in model.parameters():
        p.requires_grad_(True)
    return model
''',
}
"""``fix(model)`` for the user's model, applied before the optimizer is built."""

_IDENTITY_CALL = '''# The change to make in your code: remove the call to {op} at line {line} of
# {file}{code}
# fix(model) makes the same change at run time, as the doctor verified it, for a model built
# from that file: that one call returns its input unchanged, every other call runs as it is.
from gatrank.doctor.verify import model_edit

EDIT = {spec!r}


def fix(model):
    """{op} at line {line} made the identity in every forward pass of ``model`` (the signal
    trace found it makes every score equal); gradients flow through it. Returns ``model``."""
    return model_edit(EDIT)(model)
'''
"""``fix(model)`` for a call in the user's code made the identity: the same
:func:`gatrank.doctor.verify.model_edit` the doctor verified, so the call is matched exactly as
the signal trace named it."""

_SWAP = '''
# gatrank's GATRanker learns these graphs where your model does not: run gatrank train
# without --model (or compare your model's layers with gatrank.model.GATRanker)
'''
