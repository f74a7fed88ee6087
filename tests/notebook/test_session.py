"""A notebook's run: its parameters resolved into the config."""

from __future__ import annotations

import pytest

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
