"""The store contract: both stores implement `Store`, callers type against it, and no module
reaches into another's private names."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import hallu
from hallu.config import StorageCfg
from hallu.store.base import Store
from hallu.store.factory import store_at
from hallu.store.local import LocalStore
from hallu.store.s3 import S3Store

PACKAGE = Path(hallu.__file__).parent
CALLERS = (
    "run/launch.py",
    "run/local.py",
    "run/ray.py",
    "run/noise.py",
    "report/summary.py",
    "report/behavior.py",
    "store/reader.py",
)


def _protocol_methods() -> set[str]:
    return {n for n, v in vars(Store).items() if callable(v) and not n.startswith("_")}


def test_both_stores_implement_every_method_of_the_protocol(tmp_path):
    s3 = S3Store(StorageCfg(kind="s3", bucket="b", prefix="p"), "r")
    local = LocalStore(tmp_path, "r")
    assert isinstance(local, Store) and isinstance(s3, Store)
    for cls in (LocalStore, S3Store):
        for name in _protocol_methods():
            mine = inspect.signature(getattr(cls, name)).parameters
            theirs = inspect.signature(getattr(Store, name)).parameters
            assert list(mine) == list(theirs), f"{cls.__name__}.{name}: {list(mine)}"


def test_store_at_reads_a_location_as_the_writer_laid_it_out(tmp_path):
    local = store_at(tmp_path / "runs" / "r7")
    assert isinstance(local, LocalStore) and local.dir == (tmp_path / "runs" / "r7").resolve()
    remote = store_at("s3://bkt/some/prefix/r7", check=False)  # no such store here
    assert isinstance(remote, S3Store)
    assert (remote.bucket, remote.base, remote.run_id) == ("bkt", "some/prefix/r7", "r7")


def test_callers_type_stores_against_the_protocol():
    for rel in CALLERS:
        text = (PACKAGE / rel).read_text()
        tree = ast.parse(text)
        for node in ast.walk(tree):
            if isinstance(node, ast.arg) and node.arg == "store" and node.annotation is not None:
                ann = ast.unparse(node.annotation)
                assert ann == "Store", f"{rel}: parameter store: {ann} (type it as Store)"


def test_no_module_imports_a_private_name_from_the_store():
    # (The package-wide rule is issue 14's; engine/attribution.py is another helper's to fix.)
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("hallu.store"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                if private:
                    offenders.append(f"{path.relative_to(PACKAGE)}: {node.module} {private}")
    assert not offenders, offenders
