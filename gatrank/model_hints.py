"""What to tell a user whose own model fails the first time gatrank builds or runs it: the
errors a PyTorch Geometric user hits, each said with what happened and what to change.

- :func:`embedding_hint`: an ``nn.Embedding`` over atom types fed gatrank's float one-hot node
  features ("Expected tensor for argument #1 'indices' ... Long, Int");
- :func:`unset_global`: a model class reading a global its script sets outside the import (PyG's
  ``examples/pna.py`` reads ``deg``), built from an import string.

They read the exception and the graphs only; :mod:`gatrank.model` calls them where it builds and
runs a model.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from types import TracebackType
from typing import Any

from torch import Tensor
from torch_geometric.utils.smiles import x_map

__all__ = ["embedding_hint", "unset_global"]


def embedding_hint(exc: BaseException, x: Any) -> str | None:
    """For an ``nn.Embedding`` (``F.embedding``) failing on gatrank's float node features ``x``:
    what they are and how to feed an Embedding, added to ``exc``'s message (the same exception
    object) and kept as ``exc.gatrank_hint``; None for any other exception."""
    said, code = str(exc), getattr(getattr(_raised_in(exc), "tb_frame", None), "f_code", None)
    if getattr(exc, "gatrank_hint", None) or not isinstance(exc, (RuntimeError, IndexError)) \
            or not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() != 2 or not (
            ("'indices'" in said and "Long, Int" in said) or (code and code.co_name == "embedding"
             and code.co_filename.replace("\\", "/").endswith("torch/nn/functional.py"))):
        return getattr(exc, "gatrank_hint", None)
    x, w = x.detach(), x.shape[1]
    ones, what, codes = bool(((x == 0) | (x == 1)).all()), "real-valued", ""
    if w == sum(map(len, x_map.values())) and ones and bool((x.sum(1) == len(x_map)).all()):
        what = f"one-hot atom features from SMILES: PyG's {', '.join(x_map)}, side by side"
        codes = "x[:, 0:119].argmax(-1) is the atomic number (an Embedding over it needs 119 rows)"
    elif ones and bool((x.sum(1) == 1).all()):
        what, codes = "one-hot, one 1 per row", f"x.argmax(-1) is the category (of {w})"
    elif w == 1 and bool((x >= 0).all() & (x == x.round()).all()):
        what, codes = "whole numbers: category codes stored as float", "x[:, 0].long()"
    hint = (f"gatrank's node features are float: x is {str(x.dtype).removeprefix('torch.')}, "
            f"{w} wide ({what}), and an nn.Embedding needs Long/Int indices. Fix it in the "
            f"model: nn.Linear({w}, <embedding size>) over x in place of the Embedding"
            + (" (on one-hot rows: a sum of embeddings)" if ones else "")
            + (f", or turn the features into integer codes: {codes}" if codes else "")
            + ". gatrank loads no integer x: SMILES are one-hot encoded, graph files' x is read "
            "as float and a dataset's integer x is refused.")
    exc.args = (f"{exc.args[0] if exc.args else ''}\n{hint}",) + tuple(exc.args[1:])
    exc.gatrank_hint = hint  # type: ignore[attr-defined]
    return hint


def _raised_in(exc: BaseException) -> TracebackType | None:
    """The traceback entry where ``exc`` was raised (its innermost), or None."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb


def unset_global(exc: NameError, factory: Callable, what: str) -> str | None:
    """What to say of a ``NameError`` for a global the module raising it does not set on import
    (a script's value, set under ``if __name__ == "__main__":``); None for a local, a free
    variable or a name of ``__main__`` (a notebook's: its own message says it all)."""
    tb, name = _raised_in(exc), getattr(exc, "name", None)
    mod = tb and tb.tb_frame.f_globals.get("__name__")
    if isinstance(exc, UnboundLocalError) or mod in (None, "__main__") \
            or not str(exc).startswith(f"name {name!r} is not defined"):
        return None
    at, cls = inspect.getframeinfo(tb, 1), getattr(factory, "__name__", type(factory).__name__)
    return (f"building {what} raised NameError: {exc} ({at.filename}, line {at.lineno}, in "
            f"{at.function}: {(at.code_context or [''])[0].strip()}). {name!r} is a global "
            f"that module {mod} does not set when imported: importing runs its top level only, "
            f"not the code that sets {name} (a script's body, under if __name__ == "
            f"\"__main__\":), unless the name is misspelt (then fix that line). Pass such a "
            f"value through a factory function in the module, def make_model(in_channels): "
            f"return {cls}({name}=...), computing {name} there (e.g. from the data set) for "
            f"{cls} to take as an argument, named as --model {mod}:make_model; or, in a "
            f"notebook or script that sets {name}, pass the model instance or its class to "
            "gatrank's functions directly (train(config, model=...)).")
