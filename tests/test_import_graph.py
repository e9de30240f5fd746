"""hallu's import graph, read from the source with `ast`: no cycles, and no import from a lower
layer to a higher one (the layers of docs/architecture.md, "Layers").

Every import counts: at module level, inside functions (a lazy import hides a cycle, it does not
remove it) and under `if TYPE_CHECKING:` (such an import never runs, but the lower module still
names the higher one's types, so it knows about it: an annotation is a dependency too).
"""

from __future__ import annotations

import ast
from pathlib import Path

import hallu

ROOT = Path(hallu.__file__).parent

# Bottom to top: a unit (a top-level module or package of hallu) imports only units of lower
# layers, or of its own layer where ALLOWED says so. Kept in step with docs/architecture.md.
LAYERS: list[set[str]] = [
    {"errors"},
    {"conf_paths", "suggest"},
    {"config"},
    {"shape", "cli", "prompt_ladder", "prompts", "prompt_meta", "prompt_sets"},
    {"store", "analysis"},
    {"engine", "behavior", "mechanism"},
    {"report", "status"},
    {"run"},
    {"launch", "bench", "bench_cases", "bench_baselines", "bench_gpu", "commands", "__main__"},
]
# Imports between different units of one layer (all others in a layer are forbidden).
ALLOWED = {
    ("prompts", "prompt_ladder"),
    ("prompt_meta", "prompt_ladder"),
    ("prompt_meta", "prompts"),
    ("prompt_sets", "prompts"),
    ("behavior", "engine"),
    ("mechanism", "engine"),
    ("mechanism", "behavior"),  # steered answers are generated and labelled as behaviour's
    ("suggest", "conf_paths"),
    ("__main__", "commands"),
    ("commands", "bench"),
    ("bench", "bench_cases"),
    ("bench", "bench_baselines"),
    ("bench", "bench_gpu"),
    ("bench_gpu", "bench_cases"),
    ("bench_gpu", "bench_baselines"),
}
# Stricter than the layers (docs/architecture.md, "what each never imports"): analysis is pure
# statistics on rows, and the engine and behaviour workers never touch a store.
ONLY = {"analysis": {"errors"}}
NEVER = {("engine", "store"), ("behavior", "store")}


def modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under root (a package is its __init__)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _target(name: str, known: dict[str, Path]) -> str | None:
    """The module a dotted name denotes: itself, or its longest known prefix (a name inside a
    module or package); None outside the package."""
    parts = name.split(".")
    while parts:
        if ".".join(parts) in known:
            return ".".join(parts)
        parts.pop()
    return None


def imports_of(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Every module of the package that `module` imports, anywhere in its file."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: up `level - 1` packages from this module's package
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*up, base] if base else up)
            # `from pkg import mod` imports the module pkg.mod when there is one, else pkg
            # (`_target` falls back to the longest known prefix).
            names = [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        out |= {t for n in names if (t := _target(n, known)) and t != module}
    return out


def graph(root: Path) -> dict[str, set[str]]:
    known = modules(root)
    return {m: imports_of(m, p, known) for m, p in known.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return sorted(out)


def unit(module: str) -> str:
    """hallu.run.worker -> run; hallu.bench -> bench; hallu itself -> ''."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer_of(u: str) -> int | None:
    return next((i for i, units in enumerate(LAYERS) if u in units), None)


def layer_violations(g: dict[str, set[str]]) -> list[str]:
    """'a -> b (why)' for each import that goes up a layer, sideways without leave, or that
    ONLY or NEVER forbid."""
    out = []
    for a, targets in sorted(g.items()):
        for b in sorted(targets):
            ua, ub = unit(a), unit(b)
            if ua == ub or "" in (ua, ub):
                continue
            la, lb = layer_of(ua), layer_of(ub)
            if (ua, ub) in NEVER or (ua in ONLY and ub not in ONLY[ua]):
                out.append(f"{a} -> {b} ({ua} never imports {ub})")
            elif la is None or lb is None:
                out.append(f"{a} -> {b} (unit {ua if la is None else ub!r} is in no layer)")
            elif lb > la:
                out.append(f"{a} -> {b} (up: layer {la + 1} {ua} imports layer {lb + 1} {ub})")
            elif lb == la and (ua, ub) not in ALLOWED:
                out.append(f"{a} -> {b} (sideways in layer {la + 1}: {ua} -> {ub} not allowed)")
    return out


def test_no_import_cycles():
    found = cycles(graph(ROOT))
    assert not found, "import cycles (each a set of modules importing each other):\n" + "\n".join(
        "  " + " <-> ".join(c) for c in found
    )


def test_imports_go_down_the_layers():
    found = layer_violations(graph(ROOT))
    assert not found, "imports against the layers of docs/architecture.md:\n" + "\n".join(
        "  " + v for v in found
    )


def test_every_unit_is_in_a_layer():
    units = {unit(m) for m in modules(ROOT)} - {"", "conf"}  # conf: package data only
    assert units <= set().union(*LAYERS), sorted(units - set().union(*LAYERS))


def test_the_layers_are_the_documented_ones():
    text = (ROOT.parent / "docs" / "architecture.md").read_text()
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    for i, units in enumerate(LAYERS, start=1):
        line = next((ln for ln in section.splitlines() if ln.startswith(f"{i}. ")), "")
        assert all(f"`{u}`" in line for u in units), (i, sorted(units), line)


# --- the checker itself finds what it must --------------------------------------------------


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "hallu"
    for name, text in {"__init__.py": "", **files}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_the_checker_sees_lazy_relative_and_type_checking_imports(tmp_path):
    root = _package(
        tmp_path,
        {
            "errors.py": "def f():\n    from hallu.run import worker\n",
            "run/__init__.py": "",
            "run/worker.py": "from ..engine.fast import x\n",
            "engine/__init__.py": "",
            "engine/fast.py": "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    import hallu.errors\n",
        },
    )
    g = graph(root)
    assert g["hallu.errors"] == {"hallu.run.worker"}
    assert g["hallu.run.worker"] == {"hallu.engine.fast"}
    assert g["hallu.engine.fast"] == {"hallu.errors"}
    assert cycles(g) == [["hallu.engine.fast", "hallu.errors", "hallu.run.worker"]]
    assert layer_violations(g) == [
        "hallu.errors -> hallu.run.worker (up: layer 1 errors imports layer 8 run)"
    ]


def test_the_checker_sees_sideways_imports_and_package_targets(tmp_path):
    root = _package(
        tmp_path,
        {
            "store/__init__.py": "X = 1\n",
            "analysis/__init__.py": "",
            "analysis/grid.py": "from hallu.store import X\n",
        },
    )
    g = graph(root)
    assert g["hallu.analysis.grid"] == {"hallu.store"}
    assert layer_violations(g) == [
        "hallu.analysis.grid -> hallu.store (analysis never imports store)"
    ]
    g["hallu.analysis.grid"] = set()
    g["hallu.store"] = {"hallu.analysis.grid"}
    assert layer_violations(g) == [
        "hallu.store -> hallu.analysis.grid (sideways in layer 5: store -> analysis not allowed)"
    ]
