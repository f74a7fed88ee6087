"""gatrank: find out why a graph ranking model collapses to constant scores."""

import importlib
from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "Monitor", "check_data", "overfit_test", "diagnose"]

# Exported lazily (PEP 562): `import gatrank` and `gatrank --help` stay free of torch, and
# `from gatrank import Monitor` imports the module that defines it on first use. The three
# functions are gatrank in a notebook of your own (gatrank.api, docs/api.md).
_LAZY = {"Monitor": "gatrank.monitor", "check_data": "gatrank.api",
         "overfit_test": "gatrank.api", "diagnose": "gatrank.api"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups find it without this hook
        return value
    raise AttributeError(f"module 'gatrank' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
