"""Generate the "Hook reference" of PLUGINS.md from the docstrings of
:mod:`hub.hookspecs`.

``python -m hub.docs [PLUGINS.md]`` rewrites the region between
``<!-- hooks:start -->`` and ``<!-- hooks:end -->`` in place;
``--check`` only says whether it is current (exit status 1 when not).
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import hub.hookspecs

START = "<!-- hooks:start -->"
END = "<!-- hooks:end -->"
COMMAND = "python -m hub.docs PLUGINS.md"
BANNER = re.compile(r"^# (?P<name>[A-Za-z]+): (?P<title>.+)$")
FIELD = re.compile(r"^:(?P<kind>param|returns|raises)(?: (?P<name>[^:]+))?:\s*(?P<text>.*)$")
ROLE = re.compile(r":(?:class|func|mod|meth|attr|data|exc):`~?(?:[\w.]+\.)?([\w]+)`")


@dataclass
class Hook:
    name: str
    group: str
    signature: str
    firstresult: bool
    doc: str


def hooks(source: str | None = None) -> list[Hook]:
    """Every hookspec of ``hub/hookspecs.py`` in file order, with its banner group."""
    source = source if source is not None else Path(hub.hookspecs.__file__).read_text()
    lines = source.splitlines()
    groups: list[tuple[int, str]] = []
    for number, line in enumerate(lines, 1):
        match = BANNER.match(line)
        if match and number > 1 and lines[number - 2].startswith("# ---"):
            groups.append((number, f"{match['name']}: {match['title']}"))
    found = []
    for node in ast.parse(source).body:
        if not isinstance(node, ast.FunctionDef):
            continue
        spec = next((d for d in node.decorator_list if _is_hookspec(d)), None)
        if spec is None:
            continue
        group = next((title for line, title in reversed(groups) if line < node.lineno), "")
        firstresult = isinstance(spec, ast.Call) and any(
            k.arg == "firstresult" and isinstance(k.value, ast.Constant) and k.value.value for k in spec.keywords)
        returns = f" -> {ast.unparse(node.returns)}" if node.returns else ""
        signature = f"{node.name}({ast.unparse(node.args)}){returns}"
        found.append(Hook(node.name, group, signature, firstresult, ast.get_docstring(node) or ""))
    return found


def _is_hookspec(decorator: ast.expr) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return isinstance(target, ast.Name) and target.id == "hookspec"


def _inline(text: str) -> str:
    text = ROLE.sub(r"`\1`", text)
    return text.replace("``", "`")


def render_doc(doc: str) -> str:
    """A hookspec docstring as Markdown: prose paragraphs, then the
    ``:param:``, ``:returns:`` and ``:raises:`` fields as lists."""
    prose: list[str] = []
    fields: list[list[str]] = []
    for line in doc.splitlines():
        match = FIELD.match(line.strip())
        if match:
            fields.append([match["kind"], match["name"] or "", match["text"]])
        elif fields and line.startswith(" ") and line.strip():
            fields[-1][2] += " " + line.strip()
        elif fields and line.strip():
            fields[-1][2] += " " + line.strip()
        else:
            prose.append(line)
    out = [_inline("\n".join(prose).strip())]
    params = [f"- `{name}`: {_inline(text)}" for kind, name, text in fields if kind == "param"]
    if params:
        out.append("Parameters:\n\n" + "\n".join(params))
    for kind, name, text in fields:
        if kind == "returns":
            out.append(f"Returns: {_inline(text)}")
    raises = [f"- `{name}`: {_inline(text)}" for kind, name, text in fields if kind == "raises"]
    if raises:
        out.append("Raises:\n\n" + "\n".join(raises))
    return "\n\n".join(part for part in out if part)


def reference(source: str | None = None) -> str:
    """The generated hook reference, markers included."""
    parts = [START, f"<!-- Generated from hub/hookspecs.py by `{COMMAND}`; edit the docstrings, not this. -->", ""]
    group = None
    for hook in hooks(source):
        if hook.group != group:
            group = hook.group
            parts += [f"### {group}", ""]
        parts += [f"#### `{hook.name}`", "", "```python", hook.signature, "```", ""]
        if hook.firstresult:
            parts += ["*firstresult*: the first non-`None` result is the answer.", ""]
        parts += [render_doc(hook.doc), ""]
    parts.append(END)
    return "\n".join(parts)


def update(text: str, source: str | None = None) -> str:
    """``text`` with its hook reference region regenerated.

    :raises ValueError: the markers are missing or out of order.
    """
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"PLUGINS.md needs the markers {START} and {END} around the hook reference")
    return text[:start] + reference(source) + text[end + len(END):]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hub.docs", description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", default="PLUGINS.md", type=Path)
    parser.add_argument("--check", action="store_true", help="exit 1 when the reference is out of date")
    args = parser.parse_args(argv)
    current = args.path.read_text()
    wanted = update(current)
    if args.check:
        if wanted != current:
            print(f"{args.path}: the hook reference is out of date; run `{COMMAND}`", file=sys.stderr)
            return 1
        return 0
    if wanted != current:
        args.path.write_text(wanted)
        print(f"{args.path}: hook reference regenerated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
