"""gatrank.plugins.load_object: a user's object by import string; callables unless asked for
any object (a dataset instance, a list of graphs)."""

from __future__ import annotations

import math

import pytest

from gatrank.plugins import load_object


def test_a_callable_by_default_any_object_when_asked():
    assert load_object("math:sqrt") is math.sqrt
    assert load_object("os.path:join") is __import__("os").path.join
    with pytest.raises(ValueError, match="'math:pi' names float, not a callable"):
        load_object("math:pi", what="model")
    assert load_object("math:pi", what="dataset", callable_only=False) == math.pi


@pytest.mark.parametrize(("spec", "words"), [
    ("math.pi", "must look like 'package.module:Name'"),
    ("no_such_module_x:thing", "cannot import module 'no_such_module_x'"),
    ("math:nothing", "has no attribute 'nothing'"),
])
def test_bad_import_strings_say_what_is_wrong(spec, words):
    for callable_only in (True, False):
        with pytest.raises(ValueError, match=words):
            load_object(spec, callable_only=callable_only)
