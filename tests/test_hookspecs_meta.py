"""Meta-tests that keep the contract honest (after datasette's
test_plugin_hooks_have_tests): every hookspec has a test of its own, named
``test_hook_<hook>``, in tests/ or a bundled plugin's tests/."""

from __future__ import annotations

import ast
from pathlib import Path

from hub import hookspecs
from hub.docs import hooks

ROOT = Path(__file__).resolve().parent.parent


def scanned_files() -> list[Path]:
    return sorted(ROOT.glob("tests/**/test_*.py")) + sorted(ROOT.glob("plugins/*/tests/**/test_*.py"))


def hook_test_names() -> set[str]:
    names = set()
    for path in scanned_files():
        source = path.read_text()
        if "def test_hook_" not in source:
            continue
        for node in ast.walk(ast.parse(source, str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test_hook_"):
                names.add(node.name.removeprefix("test_hook_"))
    return names


def test_every_hook_has_a_test():
    untested = sorted(h.name for h in hooks() if h.name not in hook_test_names())
    assert not untested, (f"hooks without a test named test_hook_<hook>: {untested}; add one (tests/test_hooks.py "
                          f"holds them for the core)")


def test_every_hook_test_names_a_real_hook():
    unknown = sorted(name for name in hook_test_names() if not hasattr(hookspecs, name))
    assert not unknown, f"test_hook_* tests for hooks that do not exist: {unknown}; rename them"


def test_the_scan_sees_every_hookspec():
    declared = {name for name in dir(hookspecs) if hasattr(getattr(hookspecs, name), "hub_spec")}
    assert {h.name for h in hooks()} == declared and len(declared) >= 20
