"""The package's import rules (docs/architecture.md), checked in fresh interpreters.

config, prompts, shape, plan, behaviour's and mechanism's schemas, store, analysis and report never
import torch; engine, behaviour and mechanism never import Ray, boto3/botocore or a store; the
mechanism package never imports the packages above it (run/, report/). Modules are listed from
the packages, so a new module is checked without editing this file.
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NO_TORCH = ["torch"]
NO_CLUSTER = ["ray", "boto3", "botocore", "hallu.store"]
NOTHING_ABOVE = ["hallu.run", "hallu.report"]


def _modules(package: str) -> list[str]:
    pkg = importlib.import_module(package)
    return [
        f"{package}.{m.name}" for m in pkgutil.iter_modules(pkg.__path__) if m.name != "__main__"
    ]


GROUPS = {
    "no torch": (
        ["hallu.config", "hallu.prompts", "hallu.shape", "hallu.run.plan", "hallu.behavior.schema"]
        + ["hallu.cli", "hallu.run.gpus", "hallu.run.estimate", "hallu.run.offline_plan"]
        + ["hallu.run.stage_cost"]
        + ["hallu.run.multirun", "hallu.run.units", "hallu.mechanism.schema"]
        + ["hallu.run.jobs_cli", "hallu.run.console"]
        + ["hallu.commands", "hallu.status", "hallu.suggest", "hallu.conf_paths"]
        + [m for p in ("hallu.store", "hallu.analysis", "hallu.report") for m in _modules(p)],
        NO_TORCH,
    ),
    "no cluster or store": (
        [m for p in ("hallu.engine", "hallu.behavior", "hallu.mechanism") for m in _modules(p)],
        NO_CLUSTER,
    ),
    "mechanism below run and report": (_modules("hallu.mechanism"), NOTHING_ABOVE),
}


def loaded_after_import(modules: list[str], names: list[str]) -> list[str]:
    """Which of `names` are in sys.modules after importing `modules` in a new interpreter."""
    code = (
        f"import sys, json; [__import__(m) for m in {modules!r}]; "
        f"print(json.dumps([n for n in {names!r} if n in sys.modules]))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("group", list(GROUPS))
def test_modules_keep_their_import_rule(group):
    # All of a group in one interpreter (what none of them loads, their union does not load
    # either); on a failure, one interpreter per module names the culprits.
    modules, banned = GROUPS[group]
    if loaded_after_import(modules, banned):
        culprits = {m: found for m in modules if (found := loaded_after_import([m], banned))}
        pytest.fail(f"{group}: these modules pull in what they must not: {culprits}")


def test_the_check_sees_a_forbidden_import():
    # The probe is not blind: the engine loads torch, and the patching worker writes rows
    # with the store's schema (it is run/, not engine/).
    assert loaded_after_import(["hallu.engine.fast"], NO_TORCH) == ["torch"]
    assert "hallu.store" in loaded_after_import(["hallu.run.worker"], NO_CLUSTER)
    assert "hallu.run" in loaded_after_import(["hallu.run.units"], NOTHING_ABOVE)
    assert len(GROUPS["no torch"][0]) > 15 and len(GROUPS["no cluster or store"][0]) > 12


def test_config_never_imports_the_command_line():
    # The command line is the top layer: it imports config, never the reverse (no circle).
    assert loaded_after_import(["hallu.config", "hallu.suggest"], ["hallu.cli"]) == []
    assert "hallu.config" in loaded_after_import(["hallu.cli"], ["hallu.config"])
