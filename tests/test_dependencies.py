"""Every package hallu/ imports is declared in pyproject.toml, directly.

The check reads every module's source with `ast` (imports inside functions included), so it
needs none of the packages installed. A top-level imported name must be the standard library,
hallu itself, or a distribution named in `[project] dependencies` (declared there even when
another dependency brings it: omegaconf comes with hydra-core, but hallu imports it, so it is
declared). A package named only in an optional extra (`bench`, `gpu`) must be imported or probed
(`importlib.util.find_spec`) behind a guard in the module that uses it, and that module must say
which extra to install (`hallu[bench]`), so a user without it gets a message, not a traceback.
The `dev` extra (tests, linters) never counts for hallu/.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, as a package
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "hallu"
# Import names whose distribution is named otherwise, for when the distribution is not installed
# here (installed ones are looked up with importlib.metadata.packages_distributions()).
IMPORT_TO_DIST = {
    "hydra": "hydra-core",
    "yaml": "pyyaml",
    "PIL": "pillow",
    "sklearn": "scikit-learn",
    "huggingface_hub": "huggingface-hub",
    "transformer_lens": "transformer-lens",
}
NOT_RUNTIME = {"dev"}  # extras that hallu/ must not import from


def canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(req: str) -> str:
    return canon(re.split(r"[<>=!~\[;@ ]", req.strip(), maxsplit=1)[0])


def declared() -> tuple[set[str], dict[str, set[str]]]:
    """(distributions in `dependencies`, {extra: its distributions}) from pyproject.toml."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    deps = {requirement_name(r) for r in project["dependencies"]}
    extras = {
        extra: {requirement_name(r) for r in reqs}
        for extra, reqs in project.get("optional-dependencies", {}).items()
        if extra not in NOT_RUNTIME
    }
    return deps, extras


@functools.cache
def _installed() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def distributions(import_name: str) -> set[str]:
    """The distributions that provide a top-level import name."""
    installed = _installed().get(import_name)
    if installed:
        return {canon(d) for d in installed}
    return {canon(IMPORT_TO_DIST.get(import_name, import_name))}


@dataclass(frozen=True)
class Use:
    name: str  # top-level import name
    line: int
    guarded: bool  # inside a try that catches ImportError, or a find_spec probe


_IMPORT_ERRORS = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}


def _catches_import_error(node: ast.Try) -> bool:
    for handler in node.handlers:
        if handler.type is None:
            return True
        kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        if any(isinstance(k, ast.Name) and k.id in _IMPORT_ERRORS for k in kinds):
            return True
    return False


def uses(source: str) -> list[Use]:
    """Every absolute import in `source` (at any depth) and every find_spec("name") probe."""
    found: list[Use] = []

    def visit(node: ast.AST, guarded: bool) -> None:
        if isinstance(node, ast.Import):
            found.extend(Use(a.name.split(".")[0], node.lineno, guarded) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append(Use(node.module.split(".")[0], node.lineno, guarded))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "find_spec"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append(Use(node.args[0].value.split(".")[0], node.lineno, True))
        if isinstance(node, ast.Try):
            inner = guarded or _catches_import_error(node)
            for child in node.body:
                visit(child, inner)
            for child in [*node.handlers, *node.orelse, *node.finalbody]:
                visit(child, guarded)
            return
        for child in ast.iter_child_nodes(node):
            visit(child, guarded)

    visit(ast.parse(source), False)
    return found


def problems(sources: dict[str, str], deps: set[str], extras: dict[str, set[str]]) -> list[str]:
    """What breaks the rule, one line each, for {module path: source}."""
    stdlib = set(sys.stdlib_module_names)
    out = []
    for path, source in sorted(sources.items()):
        optional: dict[str, list[Use]] = {}
        for use in uses(source):
            if use.name in stdlib or use.name == "hallu":
                continue
            dists = distributions(use.name)
            if dists & deps:
                continue
            in_extras = [e for e, names in extras.items() if dists & names]
            if not in_extras:
                out.append(
                    f"{path}:{use.line}: imports {use.name} ({', '.join(sorted(dists))}), "
                    "which pyproject.toml's dependencies do not declare"
                )
                continue
            optional.setdefault(use.name, []).append(use)
            for extra in in_extras:
                hint = f"hallu[{extra}]"
                if hint not in source:
                    out.append(
                        f"{path}:{use.line}: {use.name} comes only with the {extra!r} extra, "
                        f"but the module never tells the user to install {hint!r}"
                    )
        for name, found in optional.items():
            if not any(u.guarded for u in found):
                out.append(
                    f"{path}:{found[0].line}: {name} is optional (an extra) but no import of it "
                    "is guarded (try/except ImportError or importlib.util.find_spec)"
                )
    return out


def _hallu_sources() -> dict[str, str]:
    return {str(p.relative_to(REPO)): p.read_text() for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_import_of_hallu_is_declared():
    deps, extras = declared()
    sources = _hallu_sources()
    assert len(sources) > 50, "the walk found too few modules"
    found = problems(sources, deps, extras)
    assert not found, "undeclared or unguarded imports:\n" + "\n".join(found)


def test_the_walk_sees_what_it_checks():
    # Imports inside functions and try blocks are found; the known runtime packages are there.
    names = {u.name for src in _hallu_sources().values() for u in uses(src)}
    assert {"pandas", "numpy", "omegaconf", "torch", "transformer_lens", "accelerate"} <= names
    deps, extras = declared()
    assert {"pandas", "numpy", "omegaconf", "hydra-core"} <= deps
    assert extras["bench"] == {"transformer-lens"} and "accelerate" in extras["gpu"]


def test_the_rule_catches_each_kind_of_mistake():
    deps, extras = {"numpy"}, {"bench": {"transformer-lens"}}
    undeclared = "import numpy\n\ndef f():\n    import pandas.api\n"
    assert [p.split(": ")[1] for p in problems({"m.py": undeclared}, deps, extras)] == [
        "imports pandas (pandas), which pyproject.toml's dependencies do not declare"
    ]
    unguarded = "def f():\n    import transformer_lens  # hallu[bench]\n"
    assert "no import of it is guarded" in problems({"m.py": unguarded}, deps, extras)[0]
    silent = "try:\n    import transformer_lens\nexcept ImportError:\n    pass\n"
    assert "never tells the user" in problems({"m.py": silent}, deps, extras)[0]
    fine = (
        "try:\n    from transformer_lens import x\nexcept ImportError:\n"
        "    raise SystemExit(\"pip install 'hallu[bench]'\")\n"
        "from transformer_lens import y\nimport os, hallu.config\n"
    )
    assert problems({"m.py": fine}, deps, extras) == []
    probe = "import importlib.util\nok = importlib.util.find_spec('accelerate')\n"
    assert "never tells the user" in problems({"m.py": probe}, deps, {"gpu": {"accelerate"}})[0]


def test_missing_transformer_lens_names_the_bench_extra(monkeypatch):
    # The bench without the extra: no bridge, and the line it prints says what to install.
    from hallu.bench_baselines import TL_MISSING, transformer_lens_bridge

    monkeypatch.setitem(sys.modules, "transformer_lens", None)  # import raises ImportError
    assert transformer_lens_bridge(None, None) is None
    assert "pip install 'hallu[bench]'" in TL_MISSING
