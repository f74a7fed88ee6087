"""Dropout off inside any model, for the runbook's overfit test, and a record of what was off.

``model.dropout: 0`` reaches only gatrank's own GAT. A user's model keeps its own dropout
(``nn.Dropout`` modules, ``F.dropout(x, p, training=self.training)`` in a ``forward``, PyG's
``MLP(dropout=...)``, ``GATConv(dropout=...)`` attention dropout, ``AttentiveFP``), which makes
the overfit test fail on some seeds for a model that can fit. :class:`DropoutOff` is a
:class:`torch.overrides.TorchFunctionMode`: while it is active every dropout a forward pass
applies in training mode runs as in eval mode (the identity), and each site it switched off is
recorded once: ``p``, the innermost module running (its path in the model), and for a call in
the user's own code its file and line.

What counts: ``F.dropout``/``dropout1d/2d/3d``/``alpha_dropout``/``feature_alpha_dropout`` (and
so every ``nn.Dropout*`` module, which calls them), ``torch.dropout``/``alpha_dropout``/
``feature_dropout``/``feature_alpha_dropout`` (and their in-place ``_`` forms),
``torch.native_dropout``, the same ``torch.ops.aten`` ops, and the dropout of attention
(``F.scaled_dot_product_attention(dropout_p=...)``, ``F.multi_head_attention_forward``, i.e.
``nn.MultiheadAttention`` and PyG's ``GPSConv``). A call with ``training=False`` or ``p == 0``
is already the identity: it runs unchanged and is not recorded. Not covered: random masks a
model draws itself (``torch.bernoulli``, PyG's ``dropout_edge``).
"""

from __future__ import annotations

import logging
import sys
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
import torch_geometric
from torch import nn
from torch.overrides import TorchFunctionMode

from gatrank.runtime import package_dirs

__all__ = ["DropoutOff", "format_dropout_off", "no_dropout"]

logger = logging.getLogger(__name__)


class _Spec(NamedTuple):
    """Where a dropout function takes its probability and its training flag."""

    name: str
    p_pos: int
    p_name: str
    p_default: float
    flag_pos: int | None
    """Position of the training flag; None: no flag, the dropout is on while ``p > 0``."""
    flag_name: str = ""
    flag_default: bool = True


def _specs() -> dict[Any, _Spec]:
    """The dropout functions as ``__torch_function__`` receives them (torch 2.x): Python
    functions of ``torch.nn.functional``, ``torch.*`` bindings and ``torch.ops.aten`` ops."""
    specs: dict[Any, _Spec] = {
        F.dropout: _Spec("F.dropout", 1, "p", 0.5, 2, "training", True),
        F.dropout1d: _Spec("F.dropout1d", 1, "p", 0.5, 2, "training", True),
        F.dropout2d: _Spec("F.dropout2d", 1, "p", 0.5, 2, "training", True),
        F.dropout3d: _Spec("F.dropout3d", 1, "p", 0.5, 2, "training", True),
        F.alpha_dropout: _Spec("F.alpha_dropout", 1, "p", 0.5, 2, "training", False),
        F.feature_alpha_dropout: _Spec("F.feature_alpha_dropout", 1, "p", 0.5, 2, "training",
                                       False),
        # attention: the dropout of the attention weights is its only use of the flag
        F.multi_head_attention_forward: _Spec("F.multi_head_attention_forward", 10, "dropout_p",
                                              0.0, 13, "training", True),
        F.scaled_dot_product_attention: _Spec("F.scaled_dot_product_attention", 4, "dropout_p",
                                              0.0, None),
    }
    for name in ("dropout", "dropout_", "alpha_dropout", "alpha_dropout_", "feature_dropout",
                 "feature_dropout_", "feature_alpha_dropout", "feature_alpha_dropout_",
                 "native_dropout"):
        specs[getattr(torch, name)] = _Spec(f"torch.{name}", 1, "p", 0.5, 2, "train", True)
        packet = getattr(torch.ops.aten, name, None)
        if packet is not None:
            specs[packet.default] = _Spec(f"aten.{name}", 1, "p", 0.5, 2, "train", True)
    return specs


_SPECS = _specs()

# frames in these folders are library internals: the caller worth naming is outside them
# (as imported and resolved: frames name files by the path they were imported from)
_LIBRARY_DIRS = package_dirs(torch, torch_geometric, sys.modules[__name__])

_DROPOUT_MODULES = nn.modules.dropout._DropoutNd  # nn.Dropout, Dropout1d/2d/3d, AlphaDropout...


def _arg(args: tuple, kwargs: dict, pos: int, name: str, default: Any) -> Any:
    return args[pos] if len(args) > pos else kwargs.get(name, default)


def _switched_off(spec: _Spec, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """The same call as in eval mode: training flag False (or ``dropout_p`` 0 without one)."""
    pos, name, value = ((spec.flag_pos, spec.flag_name, False) if spec.flag_pos is not None
                        else (spec.p_pos, spec.p_name, 0.0))
    if len(args) > pos:
        args = args[:pos] + (value,) + args[pos + 1:]
    else:
        kwargs = {**kwargs, name: value}
    return args, kwargs


class DropoutOff(TorchFunctionMode):
    """While active (``with DropoutOff(model):``), every dropout applied in training mode is
    the identity, as in eval mode; :attr:`records` lists each site switched off, once.

    Args:
        root: the model whose submodule paths name the sites (``mlp.2``); None names modules
            by their class only. Under DDP pass the bare model, not its wrapper.

    Shapes:
        unchanged: a switched-off dropout returns its input ``[*]`` as eval mode does (the
        same tensor or an equal copy, as the function does with ``training=False``), so
        gradients flow through it as through the identity.

    The mode costs one Python call per torch call while active (it sees every one, about
    2 us each), so wrap the forward pass only; :meth:`forward_scope` also drops it once a
    first forward pass showed there is nothing to switch off. Modes are per thread; the mode
    can be entered again after it exits, and :attr:`records` accumulate over all its uses.
    """

    def __init__(self, root: nn.Module | None = None) -> None:
        super().__init__()
        self.root = root
        self._paths: dict[nn.Module, str] = {}
        self._sites: dict[tuple, dict[str, Any]] = {}
        self._scopes = 0

    @property
    def records(self) -> list[dict[str, Any]]:
        """The sites switched off, in the order first seen: dicts (JSON-serializable) with
        ``p``, ``call`` (``F.dropout``, ``torch.dropout``, ...), ``kind`` (``module`` for an
        ``nn.Dropout*`` module, else ``functional``), ``module`` (the innermost running
        module's path in ``root``, ``""`` for ``root`` itself; None outside any module,
        without ``root`` or outside it), ``module_type`` (``MLP``, ``nn.Dropout``),
        ``file``/``line`` (the call when it is in the module's own code, i.e. outside
        torch/PyG; else None) and ``text`` (the line :func:`format_dropout_off` prints)."""
        return [dict(r) for r in self._sites.values()]

    def forward_scope(self) -> AbstractContextManager:
        """What one training step's forward pass runs in: this mode, except after a first
        forward pass that switched nothing off, where it is a no-op. A model whose dropout
        fires on some batches only is rare; one with none pays nothing after its first step."""
        self._scopes += 1
        if self._scopes > 1 and not self._sites:
            return nullcontext()
        return self

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        try:
            spec = _SPECS.get(func)
        except TypeError:  # an unhashable callable cannot be a dropout function
            spec = None
        if spec is None:
            return func(*args, **kwargs)
        p = _arg(args, kwargs, spec.p_pos, spec.p_name, spec.p_default)
        on = True if spec.flag_pos is None else _arg(args, kwargs, spec.flag_pos,
                                                     spec.flag_name, spec.flag_default)
        if (on is None or on) and float(p) > 0:  # native_dropout's train=None means True
            self._record(spec, float(p))
            args, kwargs = _switched_off(spec, args, kwargs)
        # the mode is popped while this runs: func's own inner calls do not come back here
        return func(*args, **kwargs)

    def _record(self, spec: _Spec, p: float) -> None:
        module, file, line = _call_site(sys._getframe(2))
        kind = "module" if isinstance(module, _DROPOUT_MODULES) else "functional"
        path = self._path(module)
        key = (spec.name, p, path, type(module).__name__ if module is not None else None,
               file, line)
        if key in self._sites:
            return
        rec: dict[str, Any] = {
            "p": p, "call": spec.name, "kind": kind, "module": path,
            "module_type": _type_name(module), "file": file, "line": line,
        }
        rec["text"] = _line(rec)
        self._sites[key] = rec
        logger.debug(rec["text"])

    def _path(self, module: nn.Module | None) -> str | None:
        if module is None or self.root is None:
            return None
        if module not in self._paths:  # first call, or a module added since
            self._paths = {m: name for name, m in self.root.named_modules()}
        return self._paths.get(module)


def _call_site(frame) -> tuple[nn.Module | None, str | None, int | None]:
    """The innermost running module, and the innermost caller outside torch/PyG when that is
    inside the module's own code (a user's ``forward``), from the frames at the call."""
    file = line = None
    f = frame
    while f is not None:
        code = f.f_code
        if file is None and not code.co_filename.startswith(_LIBRARY_DIRS):
            file, line = code.co_filename, f.f_lineno
        # a method of a module: forward, or a helper it calls (GATConv.edge_update)
        if code.co_argcount and code.co_varnames[0] == "self":
            obj = f.f_locals.get("self")
            if isinstance(obj, nn.Module):
                return obj, file, line
        f = f.f_back
    return None, file, line


def _type_name(module: nn.Module | None) -> str | None:
    if module is None:
        return None
    cls = type(module)
    return f"nn.{cls.__name__}" if cls.__module__.startswith("torch.nn.") else cls.__name__


def _line(rec: dict[str, Any]) -> str:
    """``dropout 0.5 in mlp (MLP): off for the overfit test``."""
    path, typ = rec["module"], rec["module_type"]
    where = ("" if typ is None else f" in {typ}" if path is None
             else f" in {path or 'the model'} ({typ})")
    at = f" at {Path(rec['file']).name}:{rec['line']}" if rec["file"] else ""
    via = "" if rec["kind"] == "module" or rec["call"] == "F.dropout" else f" via {rec['call']}"
    return f"dropout {rec['p']:g}{where}{at}{via}: off for the overfit test"


def format_dropout_off(records: list[dict[str, Any]]) -> str:
    """One line per site switched off (``dropout 0.2 in convs.0 (GATConv): off for the overfit
    test``); ``""`` for none."""
    return "\n".join(r.get("text") or _line(r) for r in records)


def no_dropout(model: nn.Module | None = None) -> DropoutOff:
    """``with no_dropout(model) as off: model(x)``: dropout off inside ``model`` while the
    block runs; ``off.records`` lists what was switched off (see :class:`DropoutOff`)."""
    return DropoutOff(model)
