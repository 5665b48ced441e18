"""``parse_source``: CPython 3.11's spurious "AST constructor recursion depth mismatch"
(gh-106905, a race with another thread's ``ast.parse``, e.g. ``traceback`` placing carets)
is retried; any other error is not."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from enclaverec.tee import closure


def test_a_spurious_recursion_depth_mismatch_is_retried(monkeypatch):
    real_parse = ast.parse
    calls = []

    def flaky(source, filename):
        calls.append(filename)
        if len(calls) < 3:
            raise SystemError("AST constructor recursion depth mismatch (before=147, after=197)")
        return real_parse(source, filename=filename)

    monkeypatch.setattr(closure.ast, "parse", flaky)
    tree = closure.parse_source(b"import os\n", Path("m.py"))
    assert isinstance(tree.body[0], ast.Import)
    assert len(calls) == 3


def test_a_persistent_or_other_system_error_is_raised(monkeypatch):
    def broken(source, filename):
        raise SystemError("AST constructor recursion depth mismatch")

    monkeypatch.setattr(closure.ast, "parse", broken)
    with pytest.raises(SystemError):
        closure.parse_source(b"x = 1\n", Path("m.py"))

    def other(source, filename):
        raise SystemError("something else")

    monkeypatch.setattr(closure.ast, "parse", other)
    with pytest.raises(SystemError, match="something else"):
        closure.parse_source(b"x = 1\n", Path("m.py"))
