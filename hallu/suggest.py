""" "Did you mean": the nearest existing group, option or key to what the user typed.

Below hallu/config.py (which calls it while formatting Hydra's and pydantic's complaints) and
above hallu/conf_paths.py only, so the command line (hallu/cli.py, the top layer) imports config
and never the reverse. Every suggestion must work when typed as given: a key that only some
options of a group define comes with the option that defines it
(`cluster=ray cluster.num_workers=2`), and a group without a default comes with its `+`.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from hallu.conf_paths import CONF_DIR, config_dirs, group_options

# Keys every config has although config.yaml may not spell them out (pydantic's defaults).
ALWAYS = {"mode", "run_id", "seed"}


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions), case-insensitive."""
    a, b = a.lower(), b.lower()
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def closest(word: str, candidates: list[str]) -> str | None:
    """The candidate the user most likely meant, or None (no advice beats wrong advice).

    A candidate the word begins (`a100` -> `a100_40gb`) beats a closer edit (`h100`): people
    type the start of a name and stop. Otherwise the nearest within max(2, len/3) edits."""
    if not candidates:
        return None
    low = word.lower()
    if len(low) >= 2 and low not in (c.lower() for c in candidates):
        started = [c for c in candidates if c.lower().startswith(low)]
        if started:
            return min(started, key=lambda c: (len(c), c))
    best = min(candidates, key=lambda c: (edit_distance(word, c), c))
    return best if edit_distance(word, best) <= max(2, len(word) // 3) else None


def defaults(conf: Path = CONF_DIR) -> dict[str, str]:
    """Group -> option chosen by config.yaml's defaults list (groups not there have no default)."""
    return dict(_defaults(conf))


@lru_cache(maxsize=8)  # read once per process: a table of typos asks for it hundreds of times
def _defaults(conf: Path) -> tuple[tuple[str, str], ...]:
    from omegaconf import OmegaConf

    raw = OmegaConf.to_container(OmegaConf.load(conf / "config.yaml"))
    return tuple(
        (k, v) for d in raw.get("defaults", []) if isinstance(d, dict) for k, v in d.items()
    )


def _flatten(prefix: str, node: Any, out: dict[str, str]) -> None:
    """Dotted key -> its value (as text) for every leaf of a config file."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k != "defaults":
                _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = repr(node)


def key_sources(config_dir: str | None = None) -> tuple[list[str], dict[str, set[str]]]:
    """(config groups, dotted key -> the options that define it; '' = config.yaml, always there)."""
    groups, sources, _ = _read(tuple(config_dirs(config_dir)))
    return list(groups), {k: set(v) for k, v in sources.items()}


def most_alike(options: set[str], like: str, config_dir: str | None = None) -> str:
    """Of `options` ('group=name'), the one sharing most values with `like` (then by name): the
    key cluster.num_workers on cluster=local comes with cluster=ray_local, not a remote one."""
    values = _read(tuple(config_dirs(config_dir)))[2]
    mine = values.get(like, {}).items()
    return min(options, key=lambda o: (-len(mine & values.get(o, {}).items()), o))


@lru_cache(maxsize=8)  # per set of directories; the files do not change while hallu runs
def _read(
    dirs: tuple[Path, ...],
) -> tuple[tuple[str, ...], dict[str, frozenset[str]], dict[str, dict[str, str]]]:
    """(groups, key -> options defining it, option -> its flattened values)."""
    from omegaconf import OmegaConf

    sources: dict[str, set[str]] = {k: {""} for k in ALWAYS}
    values: dict[str, dict[str, str]] = {}
    groups: set[str] = set()
    for d in dirs:
        if (d / "config.yaml").is_file():
            mine: dict[str, str] = {}
            _flatten("", OmegaConf.to_container(OmegaConf.load(d / "config.yaml")), mine)
            for k in mine:
                sources.setdefault(k, set()).add("")
        for g in (p for p in d.iterdir() if p.is_dir() and not p.name.startswith("_")):
            groups.add(g.name)
            for f in g.glob("*.yaml"):
                mine = {}
                # `# @package _global_` (protocol/seed.yaml): its keys are top-level ones.
                top = "@package _global_" in f.read_text().split("\n", 1)[0]
                _flatten("" if top else g.name, OmegaConf.to_container(OmegaConf.load(f)), mine)
                values[f"{g.name}={f.stem}"] = mine
                for k in mine:
                    sources.setdefault(k, set()).add(f"{g.name}={f.stem}")
    return tuple(sorted(groups)), {k: frozenset(v) for k, v in sources.items()}, values


def known_keys(config_dir: str | None = None) -> tuple[list[str], list[str]]:
    """(config groups, every dotted key of config.yaml and of every group option)."""
    groups, sources = key_sources(config_dir)
    return groups, sorted(sources)


def chosen(overrides: list[str], groups: list[str]) -> dict[str, str]:
    """Group -> option this command line composes: config.yaml's defaults, then `[+]group=NAME`."""
    out = defaults()
    for a in overrides:
        m = re.fullmatch(r"\+{0,2}(\w+)=(\S+)", a)
        if m and m.group(1) in groups:
            out[m.group(1)] = m.group(2)
    return out


def add_group(group: str, option: str) -> str:
    """How to type a group choice: `model=tiny`, or `+sweep=full` for a group with no default."""
    return f"{'' if group in defaults() else '+'}{group}={option}"


def hydra_value(value: Any) -> str:
    """A parsed value written back in Hydra's override syntax."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{hydra_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def did_you_mean(
    key: str, value: str | None, config_dir: str | None = None, overrides: list[str] | None = None
) -> str:
    """'; did you mean model=toy?' for an unknown key, or '' when nothing is close.

    `overrides`: the rest of the command line, to see which options are chosen; a key that the
    chosen option lacks is suggested with an option that has it."""
    groups, sources = key_sources(config_dir)
    bare = key.lstrip("+~")
    tail = f"={value}" if value is not None else ""
    if "." not in bare:
        # A group only where the value is one of its options (then it wins: `modle=toy` is
        # model=toy, not mode=toy), so that `moe=run` means mode, not model.
        fits = [g for g in groups if value is None or value in group_options(g, config_dir)]
        if g := closest(bare, fits):
            return f"; did you mean {add_group(g, value)}?" if value else f"; did you mean {g}?"
        if bare in groups:  # `protocol=default`: Hydra reads NAME=VALUE as a group's choice
            options = group_options(bare, config_dir)
            pick = closest(value or "", options) or options[0]
            return f"; {bare} is a config group: did you mean {add_group(bare, pick)}?"
    now = chosen(overrides or [], groups)
    # A top-level key named like a group cannot be set as NAME=VALUE (Hydra takes the group).
    keys = sorted(k for k in sources if k not in groups)
    # The key as typed may exist, only not in what is chosen: then only its option is missing.
    k = bare if bare in keys else closest(bare, keys)
    if not k:
        return ""
    have = sources[k]
    if "" in have or f"{k.split('.')[0]}={now.get(k.split('.')[0])}" in have:
        return "" if k == bare else f"; did you mean {k}{tail}?"
    group = k.split(".")[0]
    option = most_alike(set(have), f"{group}={now.get(group)}", config_dir)
    name = option.split("=", 1)[1]
    return f"; did you mean {add_group(group, name)} {k}{tail}?"
