"""gatrank.notebook.session.start: a notebook's data is a manifest or a PyG dataset (never both),
the parameters win over the config's source, the run records which one it read, and its other
parameters are resolved into the config."""

from __future__ import annotations

import pytest
import torch
from custom_plugins import hand_made_graphs

from gatrank.config import ConfigError
from gatrank.notebook.session import start


def test_model_kwargs_parameter_sets_the_configs_model_kwargs(tiny_manifest, tmp_path):
    run = start("03_overfit", manifest=str(tiny_manifest), run_dir=str(tmp_path),
                model="custom_plugins:PyGGCN", model_kwargs='{"hidden_channels": 8}')
    assert run.config.model.kwargs == {"hidden_channels": 8}
    plain = start("03_overfit", manifest=str(tiny_manifest), run_dir=str(tmp_path))
    assert plain.config.model.kwargs == {}
    with pytest.raises(ConfigError, match=r"model_kwargs .* is not valid JSON"):
        start("03_overfit", manifest=str(tiny_manifest), run_dir=str(tmp_path),
              model="custom_plugins:PyGGCN", model_kwargs="hidden_channels=8")


def test_a_dataset_parameter_loads_the_dataset_and_is_recorded(tmp_path, monkeypatch):
    torch.save(hand_made_graphs(), tmp_path / "graphs.pt")
    monkeypatch.chdir(tmp_path)
    run = start("01_data_checks", dataset="graphs.pt", run_dir=str(tmp_path / "run"))
    spec = str(tmp_path / "graphs.pt")  # made absolute: the kernels run in notebooks/
    assert (run.dataset, run.manifest, run.config.data.dataset) == (spec, None, spec)
    assert run.config.data.manifest == "" and len(run.graphs) == 6
    assert run.source_args == f"--dataset {spec}"
    out = run.record([])
    assert (out["dataset"], out["manifest"], out["num_graphs"]) == (spec, "", 6)


def test_import_strings_stay_as_written_and_manifests_as_before(tiny_manifest, tmp_path):
    run = start("02_loss_tests", dataset="custom_plugins:hand_made_list",
                run_dir=str(tmp_path))
    assert run.dataset == "custom_plugins:hand_made_list" and len(run.graphs) == 6
    run = start("02_loss_tests", manifest=str(tiny_manifest), run_dir=str(tmp_path))
    assert (run.manifest, run.dataset) == (tiny_manifest.resolve(), "")
    assert run.source_args == f"--manifest {tiny_manifest.resolve()}"


def test_the_parameters_win_over_the_configs_source_and_both_are_refused(tmp_path,
                                                                         tiny_manifest):
    cfg = tmp_path / "ds.yaml"
    cfg.write_text("data:\n  dataset: custom_plugins:hand_made_list\n")
    run = start("02_loss_tests", config=str(cfg), run_dir=str(tmp_path))
    assert run.dataset == "custom_plugins:hand_made_list"  # the config's source, no parameter
    run = start("02_loss_tests", config=str(cfg), manifest=str(tiny_manifest),
                run_dir=str(tmp_path))
    assert run.dataset == "" and run.manifest == tiny_manifest.resolve()
    with pytest.raises(ConfigError, match="not both"):
        start("02_loss_tests", manifest=str(tiny_manifest),
              dataset="custom_plugins:hand_made_list", run_dir=str(tmp_path))
