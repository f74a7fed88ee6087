"""Typed configuration: data, model, loss and training sections, validated on construction.

YAML keys mirror the runbook's ``config_example.yaml``::

    training:
      batch_size: 16
      learning_rate: 1e-3
      grad_clip: 1.0
      enable_debug_logs: true
    loss:
      margin_eps: 0.0
      tie_eps: 1e-6
      temperature: 1.0
      weight_by_diff: true

A YAML file may give only the keys it changes; the rest keep their defaults. Unknown keys,
wrong types and out-of-range values raise :class:`ConfigError` naming the key, the value and
what is allowed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "LossConfig",
    "TrainingConfig",
    "Config",
    "load_config",
    "overfit_config",
    "parse_model_kwargs",
    "RECOMMENDED",
    "settings_set",
    "file_keys",
    "nest",
]

logger = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A configuration key has an unknown name, a wrong type or an out-of-range value."""


def _check(cond: bool, key: str, value: Any, allowed: str) -> None:
    if not cond:
        raise ConfigError(f"config key '{key}' = {value!r} is out of range: allowed {allowed}")


@dataclass
class DataConfig:
    manifest: str = ""
    """Path to manifest.csv; empty (and no ``dataset``) means the embedded default
    (chembl-activity)."""
    dataset: str = ""
    """A PyG dataset instead of a manifest: ``package.module:name`` (a Dataset, a list of Data,
    or a callable returning one) or a ``.pt`` file of them; exclusive with ``manifest``."""
    val_fraction: float = 0.1
    """Fraction of graphs held out for validation when the manifest has no ``split`` column."""
    test_fraction: float = 0.1
    """Fraction held out for testing when the manifest has no ``split`` column."""
    on_error: str = "raise"
    """``raise``: stop on bad rows and list them all; ``skip``: drop them and report which."""
    allow_outside_root: bool = False
    """Allow ``path`` entries that leave the manifest's folder."""

    def __post_init__(self) -> None:
        if self.manifest and self.dataset:
            raise ConfigError(
                f"config keys 'data.manifest' = {self.manifest!r} and 'data.dataset' = "
                f"{self.dataset!r} are both set: give one source, a manifest.csv or a PyG "
                "dataset (a --manifest or --dataset flag replaces the config's source)")
        _check(0.0 <= self.val_fraction < 1.0, "data.val_fraction", self.val_fraction, "[0, 1)")
        _check(0.0 <= self.test_fraction < 1.0, "data.test_fraction", self.test_fraction, "[0, 1)")
        _check(
            self.val_fraction + self.test_fraction < 1.0,
            "data.val_fraction + data.test_fraction",
            self.val_fraction + self.test_fraction,
            "< 1 (something must be left to train on)",
        )
        _check(self.on_error in ("raise", "skip"), "data.on_error", self.on_error,
               "'raise' or 'skip'")


@dataclass
class ModelConfig:
    conv: str = "gat"
    """``gat`` (PyG GATConv) or ``gatv2`` (GATv2Conv)."""
    hidden_dim: int = 64
    """Width of node embeddings (summed over heads) and of the score head."""
    heads: int = 4
    """Attention heads per GAT layer; must divide ``hidden_dim``."""
    num_layers: int = 3
    """Number of GAT layers."""
    dropout: float = 0.1
    """Dropout on node features and attention weights (turned off in overfit mode)."""
    residual: bool = True
    """Add each layer's input to its output (needs equal widths, so layers after the first)."""
    pooling: str = "mean+max"
    """Global pooling: ``mean``, ``max``, ``add`` or ``mean+max`` (concatenated; the default,
    because on a congeneric series mean pooling alone dilutes the substituents that differ)."""
    head: str = "layernorm"
    """Score head: ``layernorm`` (the runbook's Linear→LayerNorm→ReLU→Linear), ``plain`` (no
    LayerNorm), or ``sigmoid``/``tanh`` (a bounded output, to show saturation)."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Constructor arguments of a model named by import string (``--model package.module:Name``;
    ``--model-kwargs JSON``), besides ``in_channels``, ``out_channels`` and ``edge_dim``, which
    gatrank fills in where the constructor names them. A JSON object, since checkpoints record
    it; gatrank's own models ignore it."""

    def __post_init__(self) -> None:
        self.kwargs = _json_object(self.kwargs, "config key 'model.kwargs'")
        _check(self.conv in ("gat", "gatv2"), "model.conv", self.conv, "'gat' or 'gatv2'")
        _check(self.hidden_dim >= 1, "model.hidden_dim", self.hidden_dim, ">= 1")
        _check(self.heads >= 1, "model.heads", self.heads, ">= 1")
        _check(
            self.hidden_dim % self.heads == 0,
            "model.hidden_dim",
            self.hidden_dim,
            f"a multiple of model.heads ({self.heads})",
        )
        _check(self.num_layers >= 1, "model.num_layers", self.num_layers, ">= 1")
        _check(0.0 <= self.dropout < 1.0, "model.dropout", self.dropout, "[0, 1)")
        _check(
            self.pooling in ("mean", "max", "add", "mean+max"),
            "model.pooling",
            self.pooling,
            "'mean', 'max', 'add' or 'mean+max'",
        )
        _check(
            self.head in ("layernorm", "plain", "sigmoid", "tanh"),
            "model.head",
            self.head,
            "'layernorm', 'plain', 'sigmoid' or 'tanh'",
        )


@dataclass
class LossConfig:
    margin_eps: float = 0.0
    """A pair (i, j) counts only when y_i > y_j + margin_eps."""
    tie_eps: float = 1e-6
    """Pairs with |y_i - y_j| <= tie_eps are ties and are ignored."""
    temperature: float = 1.0
    """Score differences are divided by this before the softplus."""
    weight_by_diff: bool = True
    """Weight each pair by |y_i - y_j| instead of a plain mean."""

    def __post_init__(self) -> None:
        _check(self.margin_eps >= 0, "loss.margin_eps", self.margin_eps, ">= 0")
        _check(self.tie_eps >= 0, "loss.tie_eps", self.tie_eps, ">= 0")
        _check(self.temperature > 0, "loss.temperature", self.temperature, "> 0")


@dataclass
class TrainingConfig:
    batch_size: int = 16
    """Graphs per batch; pairs are formed inside a batch, so at least 2."""
    learning_rate: float = 1e-3
    """Adam learning rate."""
    weight_decay: float = 0.0
    """Adam (L2) weight decay."""
    grad_clip: float = 1.0
    """Clip the total gradient norm to this; 0 turns clipping off."""
    epochs: int = 100
    """Maximum number of epochs."""
    patience: int = 20
    """Stop after this many epochs without a better validation Spearman (0: never stop early)."""
    log_every: int = 10
    """Log the runbook's metrics every this many epochs."""
    enable_debug_logs: bool = True
    """Log score mean/std and gradient norms (the runbook's debug logging)."""
    seed: int = 0
    """Seed for the split, initialisation and batch order."""
    overfit_n: int = 0
    """Overfit mode: train on the first N graphs only, no validation split (0: off)."""
    device: str = "auto"
    """``auto`` (CUDA when present), ``cpu`` or ``cuda``."""
    cpu_threads: int = 1
    """Torch intra-op threads while training on the CPU (0: torch's default). Graphs in a
    ranking batch are small, so extra threads only add synchronisation: on a busy 2-core
    machine two threads made a GAT step 20x slower than one."""
    nonfinite: str = "stop"
    """On a NaN/Inf loss or gradient: ``stop`` the run, or ``skip`` the step and count it."""

    def __post_init__(self) -> None:
        _check(self.batch_size >= 2, "training.batch_size", self.batch_size, ">= 2")
        _check(
            self.learning_rate > 0 and math.isfinite(self.learning_rate),
            "training.learning_rate",
            self.learning_rate,
            "> 0",
        )
        _check(self.weight_decay >= 0, "training.weight_decay", self.weight_decay, ">= 0")
        _check(self.grad_clip >= 0, "training.grad_clip", self.grad_clip, ">= 0 (0 = off)")
        _check(self.epochs >= 1, "training.epochs", self.epochs, ">= 1")
        _check(self.patience >= 0, "training.patience", self.patience, ">= 0")
        _check(self.log_every >= 1, "training.log_every", self.log_every, ">= 1")
        _check(
            self.overfit_n == 0 or self.overfit_n >= 2,
            "training.overfit_n",
            self.overfit_n,
            "0 (off) or >= 2",
        )
        _check(
            self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
            "training.device",
            self.device,
            "'auto', 'cpu', 'cuda' or 'cuda:N'",
        )
        _check(self.cpu_threads >= 0, "training.cpu_threads", self.cpu_threads,
               ">= 0 (0 = torch's default)")
        _check(self.nonfinite in ("stop", "skip"), "training.nonfinite", self.nonfinite,
               "'stop' or 'skip'")


_SECTIONS = {
    "data": DataConfig,
    "model": ModelConfig,
    "loss": LossConfig,
    "training": TrainingConfig,
}


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None, *, source: str = "config") -> Config:
        """Build a config from nested dicts; missing keys keep their defaults."""
        raw = raw or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
        unknown = sorted(set(raw) - set(_SECTIONS))
        if unknown:
            raise ConfigError(
                f"{source}: unknown section(s) {unknown}; allowed: {sorted(_SECTIONS)}"
            )
        sections = {}
        for name, klass in _SECTIONS.items():
            sections[name] = _build_section(name, klass, raw.get(name) or {}, source)
        return cls(**sections)

    def updated(self, overrides: dict[str, Any]) -> Config:
        """A copy with dotted-key overrides applied, e.g. ``{"training.learning_rate": 5e-3}``."""
        raw = self.to_dict()
        for dotted, value in overrides.items():
            section, _, key = dotted.partition(".")
            if section not in raw or not key:
                raise ConfigError(
                    f"override '{dotted}': expected 'section.key' with section in {sorted(raw)}"
                )
            raw[section][key] = value
        return Config.from_dict(raw, source="overrides")

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def _json_object(value: Any, what: str) -> dict[str, Any]:
    """``value`` as a dict if it is a JSON object (string keys, JSON values), else ConfigError."""
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise ConfigError(
            f"{what} = {value!r} must be a mapping of argument names to values (a JSON object), "
            'e.g. {"hidden_channels": 64, "num_layers": 2}'
        )
    try:
        json.dumps(dict(value), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what} = {value!r} is not JSON-representable ({exc}); use numbers, "
                          "strings, booleans, null, lists and mappings only") from exc
    return dict(value)


def parse_model_kwargs(text: str | Mapping[str, Any] | None, *, source: str = "--model-kwargs",
                       model: str | None = None) -> dict[str, Any]:
    """A model's constructor arguments from a JSON object (``--model-kwargs '{"a": 1}'``, the
    notebooks' ``model_kwargs``) or a mapping; empty or ``None`` gives ``{}``.

    Raises:
        ConfigError: not valid JSON, or not an object, naming ``source``; or arguments given
            while ``model`` (when not ``None``) is not an import string they could go to.
    """
    if text is None or (isinstance(text, str) and not text.strip()):
        return {}
    raw = text
    if isinstance(text, str):
        try:
            text = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"{source} {text!r} is not valid JSON ({exc}); pass an object, "
                              "e.g. '{\"hidden_channels\": 64}'") from exc
    kwargs = _json_object(text, source)
    if kwargs and model is not None and ":" not in model:
        raise ConfigError(
            f"{source} {raw!r} needs --model package.module:Name, the constructor it is "
            f"passed to (model is {model or 'gat'!r}); gatrank's own models take the model.* "
            "config keys"
        )
    return kwargs


def _coerce(key: str, value: Any, default: Any) -> Any:
    """Check ``value`` against the default's type (YAML reads ``1e-3`` as a string: accepted)."""
    kind = type(default)
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif kind is str:
        if isinstance(value, str):
            return value
    elif kind is dict:
        return _json_object(value, f"config key '{key}'")
    raise ConfigError(
        f"config key '{key}' = {value!r} has type {type(value).__name__}; expected {kind.__name__}"
    )


def _build_section(name: str, klass: type, raw: dict[str, Any], source: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: section '{name}' must be a mapping, got {raw!r}")
    defaults = klass()
    known = {f.name for f in fields(klass)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(
            f"{source}: unknown key(s) {', '.join(f'{name}.{k}' for k in unknown)}; "
            f"allowed in '{name}': {sorted(known)}"
        )
    values = {k: _coerce(f"{name}.{k}", v, getattr(defaults, k)) for k, v in raw.items()}
    return klass(**values)


def load_config(path: str | Path | None = None, **overrides: Any) -> Config:
    """Read a YAML config (safe loader); ``None`` or ``""`` gives the defaults.

    Keyword overrides use ``section__key`` names, e.g. ``training__epochs=5``.
    """
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            raw = yaml.safe_load(p.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {p} is not valid YAML: {exc}") from exc
        cfg = Config.from_dict(raw, source=str(p))
    else:
        cfg = Config()
    if overrides:
        cfg = cfg.updated({k.replace("__", "."): v for k, v in overrides.items()})
    return cfg


RECOMMENDED: dict[str, Any] = {
    "training.batch_size": 16,
    "training.learning_rate": 1e-3,
    "training.grad_clip": 1.0,
    "training.weight_decay": 0.0,
    "model.dropout": 0.1,
    "loss.margin_eps": 0.0,
    "loss.tie_eps": 1e-6,
    "loss.temperature": 1.0,
    "loss.weight_by_diff": True,
}
"""The runbook's recommended config (Step 3; ``params/config_example.yaml``, which a test
holds to this): the settings a diagnosis never names as a cause."""


def settings_set(config: Config, file_keys: Sequence[str] = ()) -> dict[str, Any]:
    """The dotted keys a user set and their values: those of a config file (``file_keys``) and
    every one whose value differs from gatrank's defaults (a ``Config`` built in code). A key
    left at its default and not in a file is gatrank's choice, not the user's."""
    mine, base = config.to_dict(), Config().to_dict()
    out = {}
    for section, values in mine.items():
        for key, value in values.items():
            dotted = f"{section}.{key}"
            if dotted in file_keys or value != base[section][key]:
                out[dotted] = value
    return out


def nest(settings: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Dotted keys (``training.learning_rate``) as the sections a YAML config file holds
    (``{"training": {"learning_rate": ...}}``), in their order."""
    out: dict[str, dict[str, Any]] = {}
    for dotted, value in settings.items():
        section, _, key = dotted.partition(".")
        out.setdefault(section, {})[key] = value
    return out


def file_keys(path: str | Path) -> list[str]:
    """The dotted keys a YAML config file gives (``[]`` for a file that is not a mapping)."""
    raw = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(raw, dict):
        return []
    return [f"{section}.{key}" for section, values in raw.items() if isinstance(values, dict)
            for key in values]


def overfit_config(base: Config, n: int = 32) -> Config:
    """The runbook's overfit test settings on top of ``base``.

    First ``n`` graphs, no validation split, 500 epochs, learning rate 5e-3, dropout off, metrics
    every 10 epochs. The whole subset is one batch so every pair is seen at each step.
    """
    # n = 0 would silently mean "overfit mode off", i.e. 500 epochs of full training
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ConfigError(
            f"overfit n = {n!r} is out of range: allowed an integer >= 2 (ranking needs pairs; "
            "the runbook uses 32)"
        )
    return base.updated(
        {
            "training.overfit_n": n,
            "training.epochs": 500,
            "training.learning_rate": 5e-3,
            "training.log_every": 10,
            "training.batch_size": max(2, n),
            "training.patience": 0,
            "model.dropout": 0.0,
        }
    )
