"""Hooks for other training frameworks, on top of :class:`gatrank.Monitor`: ``lightning`` (a
PyTorch Lightning callback; ``pip install 'gatrank[lightning]'``). Each is imported by its
module path (``from gatrank.integrations.lightning import MonitorCallback``), so this package
imports no framework."""

__all__: list[str] = []
