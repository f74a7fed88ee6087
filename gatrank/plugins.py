"""Loading a user's own model or loss from an import string ``package.module:Name``."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["load_object"]


def load_object(spec: str, *, what: str = "object") -> Any:
    """Import ``package.module:Name`` (``Name`` may be dotted, e.g. ``module:Class.factory``).

    Raises:
        ValueError: the string is malformed, the module cannot be imported or has no such name.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(
            f"{what} import string {spec!r} must look like 'package.module:Name'"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(
            f"{what} import string {spec!r}: cannot import module {module_name!r} ({exc}); "
            "is it installed or on PYTHONPATH?"
        ) from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(
                f"{what} import string {spec!r}: module {module_name!r} has no attribute {attr!r}"
            ) from None
    if not callable(obj):
        raise ValueError(
            f"{what} import string {spec!r} names {type(obj).__name__}, not a callable"
        )
    return obj
