"""Loading a user's own model, loss or dataset from an import string ``package.module:Name``."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["load_object"]


def load_object(spec: str, *, what: str = "object", callable_only: bool = True) -> Any:
    """Import ``package.module:Name`` (``Name`` may be dotted, e.g. ``module:Class.factory``).

    ``callable_only=False`` also returns objects that are not callable (a dataset instance, a
    list of graphs).

    Raises:
        ValueError: the string is malformed, the module cannot be imported or has no such name,
            or (with ``callable_only``) the object is not callable.
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
    if callable_only and not callable(obj):
        raise ValueError(
            f"{what} import string {spec!r} names {type(obj).__name__}, not a callable"
        )
    return obj
