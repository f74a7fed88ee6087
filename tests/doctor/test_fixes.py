"""Verified fixes: each fix applied as it says (data, model edit), the report ranking a verified
fix above an unverified one, --no-verify, and the hand-over a user applies to their own setup
(a config that `gatrank train --config` passes with, a script that fixes their manifest)."""

from __future__ import annotations

import importlib.util
import inspect
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from gatrank.cli import main
from gatrank.config import Config, load_config
from gatrank.doctor import DoctorOptions, diagnose
from gatrank.doctor.fixes import Fix, fixes_for
from gatrank.doctor.handover import fix_config, write_fix
from gatrank.doctor.report import Cause, DoctorReport
from gatrank.doctor.state import Diagnosis
from gatrank.doctor.verify import apply_data_fix, model_edit


def test_standardize_y_uses_the_given_training_statistics_and_copies(zoo_set):
    y = zoo_set.table["y"].to_numpy()
    fix = Fix("data", "s", data="standardize_y", detail={"y_mean": 2.0, "y_std": 4.0})
    out = apply_data_fix(zoo_set, fix)
    assert np.allclose(out.table["y"].to_numpy(), (y - 2.0) / 4.0)
    assert np.allclose(torch.cat([g.y for g in out.graphs]).numpy(), (y - 2.0) / 4.0, atol=1e-6)
    assert np.allclose(zoo_set.table["y"].to_numpy(), y)  # the original is left alone
    assert float(zoo_set.graphs[0].y) == pytest.approx(y[0])


def test_degree_features_append_one_hot_degrees(zoo_set):
    from torch_geometric.utils import degree

    fix = Fix("data", "d", data="degree_features", detail={"max_degree": 4})
    out = apply_data_fix(zoo_set, fix)
    assert out.num_features == zoo_set.num_features + 5
    g, h = zoo_set.graphs[3], out.graphs[3]
    assert torch.equal(h.x[:, : g.x.shape[1]], g.x)
    onehot = h.x[:, g.x.shape[1]:]
    assert torch.equal(onehot.sum(1), torch.ones(g.num_nodes))
    assert torch.equal(onehot.argmax(1), degree(g.edge_index[1], g.num_nodes).long().clamp(max=4))
    assert zoo_set.graphs[3].x.shape[1] == zoo_set.num_features


def test_model_edits_do_what_they_say():
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Sequential(nn.Linear(4, 1), nn.LayerNorm(1)))
    model_edit("identity:2.1")(net)
    assert isinstance(net[2][1], nn.Identity) and isinstance(net[1], nn.ReLU)
    nn.init.zeros_(net[0].weight)
    model_edit("reinit")(net)
    assert net[0].weight.abs().sum() > 0
    for p in net.parameters():
        p.requires_grad_(False)
    model_edit("unfreeze")(net)
    assert all(p.requires_grad for p in net.parameters())
    with pytest.raises(ValueError, match="unknown model edit 'fold'"):
        model_edit("fold")


def test_a_verified_cause_ranks_above_a_likelier_unverified_one_but_not_a_certain_one():
    doc = Diagnosis(None, Config(), None, None, None, DoctorOptions(), 0)
    doc.cause("learning_rate_too_low", "slow", 0.9, "overfit")
    doc.cause("over_regularized", "heavy", 0.6, "overfit")
    doc.causes["over_regularized"].verification = {"status": "verified"}
    assert [c.id for c in doc.ranked()] == ["over_regularized", "learning_rate_too_low"]
    doc.cause("score_shape_mismatch", "shape", 1.0, "model")
    doc.causes["score_shape_mismatch"].verification = {"status": "human"}
    assert doc.ranked()[0].id == "score_shape_mismatch"


def test_fix_config_keeps_the_users_settings_and_the_fixs_keys_only():
    user = Config().updated({"loss.temperature": 1e4, "training.learning_rate": 2e-3,
                             "training.enable_debug_logs": False})
    cause = Cause("vanishing_gradients", "e", "f", 0.95, "ablation",
                  verification={"status": "verified",
                                "fix": {"config": {"loss.temperature": 1.0}}})
    report = DoctorReport("cannot_fit", [cause], [], config=user.to_dict())
    # temperature is back at its default but is the fix's key; debug logs are the doctor's
    assert fix_config(report, cause) == {"loss": {"temperature": 1.0},
                                         "training": {"learning_rate": 2e-3}}


def test_no_verify_runs_no_fix(zoo_set):
    report = diagnose(zoo_set, inject="huge_temperature",
                      options=DoctorOptions(verify=False, heldout=False))
    assert report.causes and all(c.verification is None for c in report.causes)
    assert not any(s.name.startswith("verify") for s in report.stages)
    assert write_fix(report, "/nonexistent/never-written") == []


def test_a_data_fix_hands_over_a_script_that_fixes_the_manifest(tmp_path):
    manifest = tmp_path / "data" / "manifest.csv"
    manifest.parent.mkdir()
    manifest.write_text("id,y,smiles\na,1,CC\nb,3,CCO\nc,5,CCN\n")
    cause = Cause("unscaled_targets", "e", "f", 0.95, "data", verification={
        "status": "verified", "passed": True, "epoch": 40, "pairwise_accuracy": 0.95,
        "spearman": 0.96, "score_std": 1.2,
        "fix": {"kind": "data", "label": "standardize y", "base": "overfit",
                "data": "standardize_y", "detail": {"y_mean": 3.0, "y_std": 2.0}}})
    report = DoctorReport("collapsed", [cause], [], config=Config().to_dict(),
                          setup={"source": str(manifest)})
    files = write_fix(report, tmp_path / "fix")
    assert [f.name for f in files] == ["config.yaml", "apply_fix.py", "fix.json"]
    assert load_config(tmp_path / "fix" / "config.yaml") == Config()
    subprocess.run([sys.executable, str(tmp_path / "fix" / "apply_fix.py")], check=True,
                   capture_output=True)
    fixed = (manifest.parent / "manifest_fixed.csv").read_text().splitlines()
    assert fixed == ["id,y,smiles", "a,-1.0,CC", "b,0.0,CCO", "c,1.0,CCN"]
    assert manifest.read_text().startswith("id,y,smiles\na,1,")  # the original is kept


@pytest.mark.slow
def test_the_written_config_fix_passes_the_overfit_test_where_the_unfixed_one_fails(
        tmp_path, capsys):
    assert main(["doctor", "--inject", "huge_temperature", "--write-fix",
                 str(tmp_path / "fix"), "--json", str(tmp_path / "report.json")]) == 1
    out = capsys.readouterr().out
    assert "fix verified" in out and "wrote the verified fix of vanishing_gradients" in out
    written = yaml.safe_load((tmp_path / "fix" / "config.yaml").read_text())
    assert written["loss"]["temperature"] == 1.0
    # the diagnosed settings, the fault's temperature included, fail the same command
    import json

    unfixed = json.loads((tmp_path / "report.json").read_text())["config"]
    (tmp_path / "unfixed.yaml").write_text(yaml.safe_dump(unfixed))
    for config, verdict in (("unfixed.yaml", 1), ("fix/config.yaml", 0)):
        run = str(tmp_path / ("run-" + config.replace("/", "-").removesuffix(".yaml")))
        assert main(["train", "--config", str(tmp_path / config), "--overfit-n", "32",
                     "--stop-at-verdict", "--no-progress", "-q", "--out", run]) == 0
        assert main(["verdict", run]) == verdict, (config, capsys.readouterr().out)


def _relu_line() -> tuple[str, int]:
    """File and line of the torch.relu in OffsetReluHead.forward."""
    from gatrank.doctor.buggy import OffsetReluHead

    lines, start = inspect.getsourcelines(OffsetReluHead.forward)
    return (inspect.getsourcefile(OffsetReluHead),
            start + next(i for i, t in enumerate(lines) if "torch.relu(" in t))


def _call_cause(file: str, line: int) -> Cause:
    culprit = {"path": "lin_out", "type": "Linear(64, 1)", "where": "forward",
               "cause": "dead_activations", "op": "torch.relu", "file": file, "line": line,
               "code": "return torch.relu(self.lin_out(h) - 1000).squeeze(-1)",
               "site": f"buggy.py:{line}"}
    return Cause("dead_activations", "e", "f", 0.9, "overfit", {"culprit": culprit})


def test_a_call_the_trace_blames_is_removed_first_and_gatranker_is_the_last_resort():
    file, line = _relu_line()
    user = Diagnosis(None, Config(), "gatrank.doctor.buggy:OffsetReluHead", None, None,
                     DoctorOptions(), 0)
    first, last = fixes_for(user, _call_cause(file, line))
    assert (first.kind, first.edit) == ("model", f"identity_call:torch.relu@{file}:{line}")
    assert first.label == f"make torch.relu at buggy.py:{line} the identity (remove that call)"
    assert first.detail["line"] == line and first.detail["code"].startswith("return torch.relu(")
    assert (last.model, last.label) == ("gat", "last resort: gatrank's GATRanker in place of "
                                               "your model")
    # gatrank's own model: the call is removed, and there is no model of the user's to swap
    builtin = Diagnosis(None, Config(), None, None, None, DoctorOptions(), 0)
    assert [f.edit for f in fixes_for(builtin, _call_cause(file, line))] == [first.edit]
    # a forward culprit without a recorded call: only the swap, said to be the last resort
    culprit = {**_call_cause(file, line).measured["culprit"], "op": "", "file": "",
               "line": None}
    bare = Cause("constant_output_layer", "e", "f", 0.95, "overfit", {"culprit": culprit})
    assert [f.label for f in fixes_for(user, bare)] == [last.label]


def test_the_written_identity_call_fix_makes_that_call_the_identity(tmp_path, zoo_set):
    from torch_geometric.data import Batch
    from torch_geometric.nn import global_mean_pool

    from gatrank.doctor.buggy import OffsetReluHead
    from gatrank.model import adapt_forward

    file, line = _relu_line()
    blamed = _call_cause(file, line)
    rec = fixes_for(Diagnosis(None, Config(), "x:Y", None, None, DoctorOptions(), 0), blamed)[0]
    cause = Cause("dead_activations", "e", "f", 0.9, "overfit", verification={
        "status": "verified", "passed": True, "epoch": 230, "pairwise_accuracy": 0.9,
        "spearman": 0.91, "score_std": 3.4, "fix": rec.to_dict()})
    report = DoctorReport("collapsed", [cause], [], config=Config().to_dict())
    files = write_fix(report, tmp_path / "fix")
    assert [f.name for f in files] == ["config.yaml", "apply_fix.py", "fix.json"]
    script = (tmp_path / "fix" / "apply_fix.py").read_text()
    assert f"line {line} of\n# {file}" in script and "- 1000" in script
    spec = importlib.util.spec_from_file_location("apply_fix", tmp_path / "fix" / "apply_fix.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    model = adapt_forward(module.fix(OffsetReluHead(zoo_set.num_features)))
    batch = Batch.from_data_list([zoo_set[i] for i in range(8)])
    scores = model(batch)
    with torch.no_grad():
        h = torch.nn.functional.relu(model.conv1(batch.x, batch.edge_index))
        h = torch.nn.functional.relu(model.conv2(h, batch.edge_index))
        expected = model.lin_out(global_mean_pool(h, batch.batch)).squeeze(-1) - 1000
    assert torch.allclose(scores, expected) and float(scores.detach().std()) > 0
    scores.sum().backward()
    assert model.lin_out.weight.grad.abs().sum() > 0
