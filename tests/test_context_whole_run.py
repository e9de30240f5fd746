"""The whole run must fit the model's context (issue 24, item 3): the prompt and what a stage
generates after it (behaviour answers, steering and patch-and-generate answers) or scores after it
(logprob_diff's continuations), checked before anything loads or runs, naming pair and numbers."""

from __future__ import annotations

import csv

import pytest

from hallu.errors import UserError
from hallu.mechanism.units import check
from hallu.prompts import builtin_path
from hallu.run.prepare import prepare

from .conftest import tiny_config

CTX = 512  # the tiny model's context


@pytest.fixture(scope="module")
def long_prompt(tmp_path_factory):
    """A prompt file whose first pair's certain prompt is a little under the context: (its
    overrides, the pair id, its length in tokens)."""
    with open(builtin_path(), newline="") as f:
        rows = list(csv.DictReader(f))
    path = tmp_path_factory.mktemp("ctx") / "long.csv"

    def length(words: int) -> int:
        rows[0]["text"] = " ".join(["definitely"] * words) + " The sky is blue."
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        cfg = tiny_config("prompts=file", f"prompts.path={path}", "sweep.pairs=2")
        return len(prepare(cfg).token_ids[rows[0]["pair_id"]]["certain"])

    one, two = length(1), length(2)
    n = length((CTX - 20 - (one - (two - one))) // (two - one))
    assert CTX - 64 < n <= CTX, n
    return ["prompts=file", f"prompts.path={path}", "sweep.pairs=2"], rows[0]["pair_id"], n


def test_behaviour_answers_past_the_context_are_refused_naming_pair_and_numbers(long_prompt):
    args, pid, n = long_prompt
    beh = [*args, "sweep.experiments=[patching,behavior]"]
    with pytest.raises(UserError) as err:
        prepare(tiny_config(*beh, "behavior.max_new_tokens=64"))
    assert str(err.value) == (
        f"behavior.max_new_tokens=64: pair '{pid}' (certain) is {n} tokens, and {n} + 64 = "
        f"{n + 64} is more than the model's context of {CTX} positions (1 prompt(s) too long). "
        f"Fix: set behavior.max_new_tokens={CTX - n} or lower, or leave the pair out with "
        "sweep.pairs=[...]"
    )
    prepare(tiny_config(*beh, f"behavior.max_new_tokens={CTX - n}"))  # exactly fits
    prepare(tiny_config(*args, "behavior.max_new_tokens=64"))  # no behaviour asked: no answers


def test_mechanism_answers_past_the_context_are_refused(long_prompt):
    args, pid, _ = long_prompt
    mech = [*args, "+sweep=mechanism", "sweep.mechanism.patch_layers=[1]"]
    with pytest.raises(UserError, match=rf"sweep.mechanism.max_new_tokens=64: pair '{pid}'"):
        check(prepare(tiny_config(*mech, "sweep.mechanism.max_new_tokens=64")))
    check(prepare(tiny_config(*mech, "sweep.mechanism.max_new_tokens=8")))


def test_the_launch_stops_before_anything_is_written(long_prompt, run_cli, tmp_path):
    args, pid, n = long_prompt
    proc = run_cli(*args, "sweep.experiments=[behavior]", "behavior.max_new_tokens=64", "run_id=c")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"hallu: error: behavior.max_new_tokens=64: pair '{pid}' (certain)" in proc.stderr
    assert not (tmp_path / "runs").exists()
