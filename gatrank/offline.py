"""The plotly.js that gatrank's offline HTML loads: from the installed plotly package, never a
CDN, either inlined in a page or as one ``plotly.min.js`` that a folder of pages shares
(a suite's report folder: the notebooks' reports and 05_eval's ``scatter.html``)."""

from __future__ import annotations

import functools
from pathlib import Path

from gatrank.io import write_if_changed

__all__ = ["PLOTLY_JS", "plotly_js_bytes", "write_plotly_js"]

PLOTLY_JS = "plotly.min.js"
"""File name of the plotly.js that pages not carrying their own copy load from their folder."""


@functools.cache
def plotly_js_bytes() -> bytes:
    """The installed plotly package's plotly.js (read once per process: it is megabytes)."""
    from plotly.offline import get_plotlyjs  # deferred: plotly is a heavy import

    return get_plotlyjs().encode("utf-8")


def write_plotly_js(folder: str | Path) -> Path:
    """Put the installed plotly package's plotly.js in ``folder`` as :data:`PLOTLY_JS`, unless
    the same bytes are already there (safe from concurrent exports); returns its path."""
    return write_if_changed(Path(folder) / PLOTLY_JS, plotly_js_bytes())
