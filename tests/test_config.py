"""Config loading: partial files, defaults, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from gatrank.config import (
    Config,
    ConfigError,
    load_config,
    overfit_config,
    parse_model_kwargs,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "params" / "config_example.yaml"


def test_example_config_is_the_runbook_recommendation():
    cfg = load_config(EXAMPLE)
    assert cfg.training.batch_size == 16
    assert cfg.training.learning_rate == 1e-3
    assert cfg.training.grad_clip == 1.0
    assert cfg.training.enable_debug_logs is True
    assert cfg.loss.margin_eps == 0.0
    assert cfg.loss.tie_eps == 1e-6
    assert cfg.loss.temperature == 1.0
    assert cfg.loss.weight_by_diff is True


def test_partial_file_keeps_other_defaults(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("training:\n  learning_rate: 1e-2\nmodel:\n  conv: gatv2\n")
    cfg = load_config(p)
    assert cfg.training.learning_rate == 0.01  # YAML's '1e-2' string is read as a float
    assert cfg.model.conv == "gatv2"
    assert cfg.training.batch_size == Config().training.batch_size


def test_round_trip_through_yaml(tmp_path):
    cfg = Config().updated({"model.heads": 2, "loss.temperature": 0.5})
    cfg.save(tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg


@pytest.mark.parametrize(
    "text, names",
    [
        ("training:\n  learnig_rate: 0.1\n", ["training.learnig_rate"]),
        ("optimizer:\n  lr: 0.1\n", ["optimizer"]),
        ("training:\n  learning_rate: 0\n", ["training.learning_rate", "0"]),
        ("training:\n  learning_rate: -1e-3\n", ["training.learning_rate"]),
        ("training:\n  batch_size: 1\n", ["training.batch_size", ">= 2"]),
        ("training:\n  batch_size: sixteen\n", ["training.batch_size", "int"]),
        ("loss:\n  tie_eps: -1e-6\n", ["loss.tie_eps"]),
        ("loss:\n  margin_eps: -0.1\n", ["loss.margin_eps"]),
        ("loss:\n  temperature: 0\n", ["loss.temperature"]),
        ("loss:\n  weight_by_diff: 'yes'\n", ["loss.weight_by_diff", "bool"]),
        ("model:\n  dropout: 1.5\n", ["model.dropout"]),
        ("model:\n  conv: gcn\n", ["model.conv"]),
        ("model:\n  hidden_dim: 30\n  heads: 4\n", ["model.hidden_dim", "multiple"]),
        ("training:\n  overfit_n: 1\n", ["training.overfit_n", ">= 2"]),
        ("- just\n- a list\n", ["mapping"]),
        ("model:\n  kwargs: [64, 2]\n", ["model.kwargs", "JSON object"]),
        ("model:\n  kwargs: 64\n", ["model.kwargs", "mapping"]),
        ("model:\n  kwargs: {1: 64}\n", ["model.kwargs", "mapping"]),
        ("model:\n  kwargs: {when: 2024-01-01}\n", ["model.kwargs", "JSON-representable"]),
    ],
)
def test_bad_values_name_the_key(tmp_path, text, names):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(p)
    for name in names:
        assert name in str(err.value)


def test_missing_and_invalid_yaml_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    p = tmp_path / "broken.yaml"
    p.write_text("training: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)


def test_yaml_is_read_with_a_safe_loader(tmp_path):
    p = tmp_path / "evil.yaml"
    p.write_text("training: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError):
        load_config(p)


def test_overfit_config_applies_the_runbook_settings():
    cfg = overfit_config(Config().updated({"model.dropout": 0.5}), n=32)
    assert cfg.training.overfit_n == 32
    assert cfg.training.epochs == 500
    assert cfg.training.learning_rate == 5e-3
    assert cfg.training.log_every == 10
    assert cfg.model.dropout == 0.0


def test_overrides_reject_unknown_sections():
    with pytest.raises(ConfigError, match="section.key"):
        Config().updated({"lr": 1.0})


def test_model_kwargs_from_yaml_round_trip(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model:\n  kwargs:\n    hidden_channels: 64\n    act: relu\n"
                 "    channels: [8, 16]\n")
    cfg = load_config(p)
    assert cfg.model.kwargs == {"hidden_channels": 64, "act": "relu", "channels": [8, 16]}
    assert Config().model.kwargs == {} and Config().model.kwargs is not cfg.model.kwargs
    cfg.save(tmp_path / "again.yaml")
    assert load_config(tmp_path / "again.yaml") == cfg
    assert cfg.updated({"model.kwargs": {"a": 1}}).model.kwargs == {"a": 1}


def test_parse_model_kwargs_reads_a_json_object():
    assert parse_model_kwargs('{"hidden_channels": 64, "num_layers": 2}') == {
        "hidden_channels": 64, "num_layers": 2}
    assert parse_model_kwargs("") == {} and parse_model_kwargs(None) == {}
    assert parse_model_kwargs({"a": 1}, model="pkg.mod:Net") == {"a": 1}
    with pytest.raises(ConfigError, match=r"--model-kwargs .* is not valid JSON"):
        parse_model_kwargs("{hidden_channels: 64}")
    with pytest.raises(ConfigError, match=r"--model-kwargs = \[64\] must be a mapping"):
        parse_model_kwargs("[64]")
    with pytest.raises(ConfigError, match=r"needs --model package.module:Name.*'gat'"):
        parse_model_kwargs('{"a": 1}', model="")


def test_a_manifest_and_a_dataset_together_are_refused(tmp_path):
    p = tmp_path / "both.yaml"
    p.write_text("data:\n  manifest: m.csv\n  dataset: mymod:ds\n")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert "'data.manifest'" in str(err.value) and "'data.dataset'" in str(err.value)
    assert "give one source" in str(err.value)
    p.write_text("data:\n  dataset: mymod:ds\n")
    cfg = load_config(p, data__manifest="m.csv", data__dataset="")  # overrides replace it
    assert (cfg.data.manifest, cfg.data.dataset) == ("m.csv", "")

