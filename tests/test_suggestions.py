"""Every suggestion works when typed: each "did you mean" and "Fix:" the launcher prints, applied
verbatim, is not rejected as unknown and does not point back at what was typed (no cycles).

Wrong inputs are generated from the configs themselves (every group, option, key and allowed
value with one letter dropped), plus the cases users met. Composition runs in this process with
`--cfg job` (compose and validate, nothing planned), and with mode=plan where the fix comes from
the plan's estimate.
"""

from __future__ import annotations

import re
import typing
from dataclasses import dataclass

import pytest
from omegaconf import OmegaConf
from pydantic import BaseModel

from hallu.config import CONF_DIR, Config, group_options
from hallu.run.launch import main
from hallu.suggest import defaults, key_sources

# What a suggestion that does not work looks like when it is typed.
REJECTED = ("unknown config key", "there is no ", "has a default option", "could not compose")


def _drop(word: str) -> str:
    """The word with its middle letter dropped (a typo that keeps the word recognisable)."""
    i = len(word) // 2
    return word[:i] + word[i + 1 :]


def _value(v: object) -> str:
    """A yaml value as an override can carry it; anything Hydra would need quoted becomes null."""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (int, float)) or (isinstance(v, str) and re.fullmatch(r"[\w./:-]+", v)):
        return str(v)
    return "null"


def _yaml_values() -> dict[str, str]:
    """Dotted key -> a value it has in some config file."""
    out: dict[str, str] = {}

    def walk(prefix: str, node: object) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k != "defaults":
                    walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            out.setdefault(prefix, _value(node))

    walk("", OmegaConf.to_container(OmegaConf.load(CONF_DIR / "config.yaml")))
    for g in (p for p in CONF_DIR.iterdir() if p.is_dir() and not p.name.startswith("_")):
        for f in g.glob("*.yaml"):
            top = "@package _global_" in f.read_text().split("\n", 1)[0]
            walk("" if top else g.name, OmegaConf.to_container(OmegaConf.load(f)))
    return out


def _literals(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str]]:
    """(dotted key, allowed value) for every Literal-typed field of the config schema."""
    out = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        ann = field.annotation
        for arg in (ann, *typing.get_args(ann)):
            if typing.get_origin(arg) is typing.Literal:
                out += [(key, str(v)) for v in typing.get_args(arg) if isinstance(v, str)]
            elif isinstance(arg, type) and issubclass(arg, BaseModel):
                out += _literals(arg, key + ".")
    return out


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]  # the whole command line
    wrong: str  # the argument a "did you mean" replaces
    plan: bool = False  # run the plan (its estimate gives fixes), not only the composition


def _typed(group: str, option: str) -> str:
    return f"{'' if group in defaults() else '+'}{group}={option}"


def generated_cases() -> list[Case]:
    groups, sources = key_sources()
    cases: list[Case] = []
    for g in groups:
        options = group_options(g)
        cases.append(Case((a := f"{_drop(g)}={options[0]}",), a))  # misspelled group
        if g not in defaults():
            cases.append(Case((a := f"+{_drop(g)}={options[0]}",), a))
            cases.append(Case((a := f"{g}={options[0]}",), a))  # the + forgotten
        else:
            cases.append(Case((a := f"+{g}={options[0]}",), a))  # a + too many
        for o in options:
            if len(o) > 2:
                cases.append(Case((a := _typed(g, _drop(o)),), a))  # misspelled option
    values = _yaml_values()
    for key in sorted(sources):
        head, _, last = key.rpartition(".")
        if len(last) > 3:
            typo = f"{head}.{_drop(last)}" if head else _drop(last)
            cases.append(Case((a := f"{typo}={values.get(key, 'null')}",), a))
        if "." in key and len(head) > 3:  # the group part misspelled
            cases.append(Case((a := f"{_drop(head)}.{last}={values.get(key, 'null')}",), a))
    for key, allowed in _literals(Config):
        if len(allowed) > 3:
            cases.append(Case((a := f"{key}={_drop(allowed)}",), a))
    return list(dict.fromkeys(cases))


SPECIAL = [
    Case(("+sweep=ful",), "+sweep=ful"),
    Case(("sweep=full",), "sweep=full"),
    Case(("swep=full",), "swep=full"),
    Case(("+model=tiny",), "+model=tiny"),
    Case(("cluster.gpu=a100",), "cluster.gpu=a100"),
    Case(("model.dtype=fp16",), "model.dtype=fp16"),
    Case(("+sweep.layerz=[1]",), "+sweep.layerz=[1]"),
    Case(("cluster.num_workers=3",), "cluster.num_workers=3"),
    Case(("sweep.mechanism.alphas=[1,2]",), "sweep.mechanism.alphas=[1,2]"),
    Case(("cluster=local", "cluster.num_workrs=3"), "cluster.num_workrs=3"),
    Case(("model=llama2_70b_chat", "+sweep=full", "cluster.gpu=a100_80gb"), "", plan=True),
    Case(("cluster=ray_local", "cluster.gpu=h100"), "", plan=True),
]


def _attempt(args: list[str], plan: bool, capsys) -> tuple[int, str]:
    argv = [*args, "mode=plan"] if plan else ["--cfg", "job", *args]
    code = main(argv)
    return code, capsys.readouterr().err


def suggestions(err: str) -> list[list[str]]:
    """Each suggestion in a message, as the arguments it would be typed as."""
    out = [m.split() for m in re.findall(r"did you mean (.+?)\?", err)]
    for fix in re.findall(r"Fix: (.*)", err):
        # Each key=value of a Fix is one alternative; placeholders (NAME, URL) are not typable.
        out += [[t] for t in re.findall(r"[+~]*[\w.]+=[^\s,;()]+", fix) if not t.isupper()]
    return out


def _key(arg: str) -> str:
    return arg.lstrip("+~").split("=", 1)[0]


def apply(case: Case, suggestion: list[str]) -> list[str]:
    """The command line with the suggestion typed in: in place of the wrong argument, or, for a
    fix, replacing the argument of the same key (else added)."""
    args = list(case.args)
    if case.wrong and case.wrong in args:
        i = args.index(case.wrong)
        return args[:i] + suggestion + args[i + 1 :]
    for s in suggestion:
        same = [i for i, a in enumerate(args) if _key(a) == _key(s)]
        if same:
            args[same[0]] = s
        else:
            args.append(s)
    return args


def check(case: Case, capsys) -> tuple[int, list[str]]:
    """Run the case and every suggestion it gets: (suggestions tried, what went wrong)."""
    code, err = _attempt(list(case.args), case.plan, capsys)
    tried, problems = 0, []
    for s in suggestions(err) if code else []:
        fixed = apply(case, s)
        if fixed == list(case.args):
            problems.append(f"{case.args}: the suggestion {s} is what was typed")
            continue
        code2, err2 = _attempt(fixed, case.plan, capsys)
        tried += 1
        if any(bad in err2 for bad in REJECTED):
            problems.append(f"{case.args} -> suggested {s} -> {fixed}: {err2.strip()}")
        # No cycle: the rerun never suggests what was typed first.
        if any(case.wrong and case.wrong in x for x in suggestions(err2)):
            problems.append(f"{case.args} -> {fixed} suggests the input again: {err2.strip()}")
    return tried, problems


def check_all(cases: list[Case], capsys) -> int:
    tried, problems = 0, []
    for c in cases:
        n, found = check(c, capsys)
        tried, problems = tried + n, problems + found
    assert not problems, "\n".join(problems)
    return tried


@pytest.mark.parametrize("case", SPECIAL, ids=lambda c: " ".join(c.args))
def test_the_suggestions_users_met_work_when_typed(case, capsys):
    assert check_all([case], capsys) >= 1, f"{case.args}: no suggestion at all"


@pytest.mark.slow
def test_a_sample_of_generated_typos_gets_working_suggestions(capsys):
    cases = generated_cases()
    sample = cases[::7]  # every kind of typo, spread over the table; the slow test does all
    tried = check_all(sample, capsys)
    assert tried >= len(sample) // 2, "most typos one letter off get a suggestion"


@pytest.mark.slow
def test_every_generated_typo_gets_only_working_suggestions(capsys):
    cases = generated_cases()
    assert len(cases) > 150
    tried = check_all(cases, capsys)
    assert tried >= len(cases) // 2, "most typos one letter off get a suggestion"


def test_prefix_beats_edit_distance_and_the_70b_fix_names_a_working_key(capsys):
    code, err = _attempt(["cluster.gpu=a100"], False, capsys)
    assert code == 2 and "did you mean cluster.gpu=a100_40gb?" in err and "=h100" not in err
    code, err = _attempt(["model=llama2_70b_chat", "+sweep=full", "cluster.gpu=a100_80gb"], True,
                         capsys)  # fmt: skip
    assert code == 2 and "Fix: cluster.resources.num_gpus=2" in err
    code, err = _attempt(["cluster=ray_local", "cluster.gpu=h100"], True, capsys)
    assert code == 2 and "Fix: cluster.resources.num_gpus=1" in err
    ok, _ = _attempt(["cluster=ray_local", "cluster.gpu=h100", "cluster.resources.num_gpus=1"],
                     True, capsys)  # fmt: skip
    assert ok == 0
