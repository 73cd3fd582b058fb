"""PLUGINS.md stays true: its hook reference is generated from the docstrings
of hub/hookspecs.py and current, and the walk-through's code is the example
provider's code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hub import docs

ROOT = Path(__file__).resolve().parent.parent
PLUGINS_MD = ROOT / "PLUGINS.md"
SOURCE_BLOCK = re.compile(r"<!-- source: (?P<path>\S+) -->\n```\w*\n(?P<code>.*?)\n```", re.S)


def test_reference_of_hooks_matches_the_hookspecs():
    text = PLUGINS_MD.read_text()
    assert docs.update(text) == text, (
        f"PLUGINS.md's hook reference no longer matches hub/hookspecs.py: run `{docs.COMMAND}`")


def test_every_hook_is_documented_with_its_signature_and_parameters():
    text = PLUGINS_MD.read_text()
    for hook in docs.hooks():
        assert f"#### `{hook.name}`\n\n```python\n{hook.signature}\n```" in text
        for param in re.findall(r":param (\w+):", hook.doc):
            assert f"- `{param}`:" in text.split(f"#### `{hook.name}`", 1)[1].split("#### ", 1)[0]


def test_walkthrough_code_is_the_example_providers_code():
    blocks = SOURCE_BLOCK.findall(PLUGINS_MD.read_text())
    assert len(blocks) >= 8
    for path, code in blocks:
        assert code in (ROOT / path).read_text(), f"PLUGINS.md quotes {path}, but the file no longer has:\n{code}"


def test_check_fails_with_the_command_when_a_docstring_changes(tmp_path, capsys, monkeypatch):
    target = tmp_path / "PLUGINS.md"
    target.write_text(PLUGINS_MD.read_text())
    assert docs.main(["--check", str(target)]) == 0
    changed = Path(docs.hub.hookspecs.__file__).read_text().replace("Describe the provider.", "Say what it is.")
    monkeypatch.setattr(docs, "reference", lambda source=None, _real=docs.reference: _real(changed))
    assert docs.main(["--check", str(target)]) == 1
    assert docs.COMMAND in capsys.readouterr().err
    assert docs.main([str(target)]) == 0
    assert "Say what it is." in target.read_text() and "Describe the provider." not in target.read_text()
    assert target.read_text().startswith("# Writing a provider plugin")


def test_update_needs_the_markers():
    with pytest.raises(ValueError, match="hooks:start"):
        docs.update("# no markers here\n")


def test_docstring_fields_render_as_lists():
    rendered = docs.render_doc("Do it.\n\n:param ctx: the context,\n    continued.\n:returns: a :class:`~hub.types.Page`.\n"
                               ":raises NotFound: when missing.")
    assert rendered == ("Do it.\n\nParameters:\n\n- `ctx`: the context, continued.\n\nReturns: a `Page`.\n\n"
                        "Raises:\n\n- `NotFound`: when missing.")
