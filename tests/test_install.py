"""The wheel works anywhere: built, installed into a fresh venv, run from outside the checkout.

The venv reuses this interpreter's site-packages for the dependencies (torch etc.), but hallu
itself must come from the wheel: the test checks the imported file lies in the venv.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _sh(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def venv_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    built = _sh(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w",
         str(root / "dist"), str(REPO)], root, env,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = next((root / "dist").glob("hallu-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    shipped = ["conf/config.yaml", "conf/model/toy.yaml", "data/prompts_builtin.csv",
               "data/toy/model.safetensors", "data/toy/tokenizer.json"]  # fmt: skip
    for needed in ("hallu/" + f for f in shipped):
        assert needed in names, f"{needed} missing from {wheel.name}"
    venv = root / "venv"
    made = _sh([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], root, env)
    assert made.returncode == 0, made.stderr
    py = venv / "bin" / "python"
    inst = _sh([str(py), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], root, env)
    assert inst.returncode == 0, inst.stderr[-2000:]
    return py


@pytest.mark.slow
def test_wheel_runs_the_demo_outside_the_checkout(venv_python: Path, tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = _sh([str(venv_python), "-c", "import hallu; print(hallu.__file__)"], tmp_path, env)
    assert str(venv_python.parent.parent) in where.stdout, where.stdout + where.stderr
    # The demo (model=toy, built-in prompts, both experiments), shrunk to keep the test short.
    args = ["run_id=wheel-demo", f"storage.root={tmp_path}/runs", "sweep.pairs=3",
            "behavior.decoding=[greedy]", "behavior.max_new_tokens=8"]  # fmt: skip
    run = _sh([str(venv_python), "-m", "hallu.launch", *args], tmp_path, env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "band-mean restoration" in run.stdout and "declarative rate per prompt" in run.stdout
    assert (tmp_path / "runs" / "wheel-demo" / "summary.md").is_file()


@pytest.mark.slow
def test_wheel_composes_a_users_config_dir(venv_python: Path, tmp_path: Path):
    (tmp_path / "mine" / "model").mkdir(parents=True)
    (tmp_path / "mine" / "model" / "small.yaml").write_text(
        "name_or_path: tiny\ndtype: float32\ndevice: cpu\n"
        "tiny: {n_layers: 2, d_model: 32, n_heads: 4, n_kv_heads: 2, d_mlp: 64}\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    base = [str(venv_python), "-m", "hallu.launch", "mode=plan", "metric=is_vs_might"]
    flag = _sh([*base, "--config-dir", str(tmp_path / "mine"), "model=small"], tmp_path, env)
    assert flag.returncode == 0, flag.stderr[-2000:]
    assert "n_layers: 2" in flag.stdout
    env["HALLU_CONFIG_DIR"] = str(tmp_path / "mine")
    by_env = _sh([*base, "model=small", "prompts=builtin"], tmp_path, env)
    assert by_env.returncode == 0 and "n_layers: 2" in by_env.stdout, by_env.stderr[-2000:]
