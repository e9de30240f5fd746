"""The docs name only what the repository has, and nothing of one machine.

Every repository path a doc names (`hallu/engine/cells.py`, `docs/engine.md`, `tests/...`,
`benchmarks/...`, `infra/...`, `jobs/...`, `.ci/...`, a `hallu/conf/` folder, a glob such as
`hallu/conf/*.yaml`) must exist, and every relative Markdown link must lead to a file; no doc
may hold an absolute path of a machine (`/work/...`, `/root/...`, `/home/...`). Docs: README.md,
infra/README.md and docs/*.md.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", REPO / "infra" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# A repository path: one of the top-level folders, then path characters; not part of a longer
# path or a URL (nothing path-like or a letter just before it).
ROOTS = ("hallu", "docs", "tests", "benchmarks", "infra", "jobs", ".ci")
REPO_PATH = re.compile(
    r"(?<![\w/.~$-])((?:" + "|".join(re.escape(r) for r in ROOTS) + r")/[\w.*/-]*)"
)
MACHINE_PATH = re.compile(r"(?<![\w.~-])/(?:work|root|home)/[\w./-]*")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def repository_paths(text: str) -> list[str]:
    """The repository paths a doc names, trailing punctuation dropped."""
    found = []
    for m in REPO_PATH.finditer(text):
        path = m.group(1).rstrip(".,;:")
        if path.rstrip("/") in ROOTS or "<" in text[m.end() : m.end() + 1]:
            continue  # a bare folder name, or a template such as hallu/conf/<group>/
        found.append(path)
    return found


def exists(path: str) -> bool:
    if any(c in path for c in "*?["):
        return any(REPO.glob(path))
    return (REPO / path).exists()


def _rel(doc: Path) -> str:
    return str(doc.relative_to(REPO))


def test_the_docs_are_found():
    names = {_rel(d) for d in DOCS}
    assert {"README.md", "infra/README.md", "docs/engine.md", "docs/benchmarks.md"} <= names
    assert all(d.is_file() for d in DOCS)


@pytest.mark.parametrize("doc", DOCS, ids=_rel)
def test_every_repository_path_a_doc_names_exists(doc: Path):
    text = doc.read_text()
    missing = sorted({p for p in repository_paths(text) if not exists(p)})
    links = [
        link.split("#")[0]
        for link in LINK.findall(text)
        if not re.match(r"[a-z][a-z0-9+.-]*:", link) and not link.startswith("#")
    ]
    broken = sorted({link for link in links if link and not (doc.parent / link).exists()})
    assert not missing, f"{_rel(doc)} names paths the repository does not have: {missing}"
    assert not broken, f"{_rel(doc)} links to files that do not exist: {broken}"


@pytest.mark.parametrize("doc", DOCS, ids=_rel)
def test_no_doc_names_a_machines_absolute_path(doc: Path):
    found = sorted(set(MACHINE_PATH.findall(doc.read_text())))
    assert not found, f"{_rel(doc)} holds absolute paths of one machine: {found}"


def test_the_checks_see_what_they_look_for():
    text = (
        "See `hallu/engine/cells.py: known_cells`, tests/test_docs.py::test_x and "
        "hallu/conf/*.yaml; not hallu/nowhere.py, nor docs/gone.md. A run writes "
        "runs/x/hallu/y.py; configs in hallu/conf/<group>/; https://github.com/a/hallu/b.py"
    )
    paths = repository_paths(text)
    assert paths == [
        "hallu/engine/cells.py",
        "tests/test_docs.py",
        "hallu/conf/*.yaml",
        "hallu/nowhere.py",
        "docs/gone.md",
    ]
    assert [p for p in paths if not exists(p)] == ["hallu/nowhere.py", "docs/gone.md"]
    machine = "python at /work/x/.venv/bin/python, /root/.cache and /home/u; not ./work/x"
    assert MACHINE_PATH.findall(machine) == ["/work/x/.venv/bin/python", "/root/.cache", "/home/u"]
