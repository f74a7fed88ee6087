"""Fixtures of the suite's tests."""

from __future__ import annotations

import re

import pytest


@pytest.fixture
def external_ref() -> re.Pattern[str]:
    """Matches a tag that loads something from another host (a CDN script, a remote image)."""
    return re.compile(r"<(script|link|img|iframe)[^>]+(src|href)\s*=\s*[\"']?(https?:)?//", re.I)
