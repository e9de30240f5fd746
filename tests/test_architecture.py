"""The package's shape rules that a reader relies on (docs/architecture.md): short functions."""

from __future__ import annotations

import ast
from pathlib import Path

import hallu

MAX_LINES = 60
ROOT = Path(hallu.__file__).parent


def long_functions(root: Path, limit: int = MAX_LINES) -> list[tuple[str, str, int]]:
    """(qualified name, file, lines) of every def in every module under root longer than limit."""
    out = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        out += _long_in(tree, path.relative_to(root.parent).as_posix(), "", limit)
    return out


def _long_in(node: ast.AST, file: str, prefix: str, limit: int) -> list[tuple[str, str, int]]:
    out = []
    for child in ast.iter_child_nodes(node):
        name = prefix
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            name = f"{prefix}{child.name}."
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = child.end_lineno - child.lineno + 1  # def line to last line, no decorators
            if length > limit:
                out.append((name[:-1], file, length))
        out += _long_in(child, file, name, limit)
    return out


def test_the_checker_finds_a_long_function_and_its_nested_one(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(60))
    inner = "\n".join(f"        y{i} = {i}" for i in range(61))
    (tmp_path / "m.py").write_text(
        f"def short():\n    pass\n\ndef long():\n{body}\n\n"
        f"class K:\n    def method(self):\n{inner}\n"
    )
    found = long_functions(tmp_path)
    assert found == [
        ("long", f"{tmp_path.name}/m.py", 61),
        ("K.method", f"{tmp_path.name}/m.py", 62),
    ]


def test_no_function_in_hallu_is_longer_than_60_lines():
    found = long_functions(ROOT)
    listing = "\n".join(f"  {name} ({file}): {n} lines" for name, file, n in found)
    assert not found, f"{len(found)} functions over {MAX_LINES} lines:\n{listing}"
