"""The launcher's command line before Hydra sees it: flags, `help`, and "did you mean".

Hydra's own parser is used for overrides; this module only takes out hallu's flags
(`--config-dir DIR`, `-m/--multirun`, `-h/--help/help`) and turns Hydra's complaints about unknown
keys or options into a suggestion from the keys and options that exist. No torch here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from hallu.config import CONF_DIR, group_options
from hallu.errors import UserError
from hallu.suggest import closest, defaults, edit_distance, known_keys

# Re-exported for callers and tests that import them from the command line's module.
__all__ = ["Args", "closest", "edit_distance", "help_text", "key_docs", "parse", "quiet_libraries"]


@dataclass
class Args:
    overrides: list[str] = field(default_factory=list)
    config_dir: str | None = None
    multirun: bool = False
    help: bool = False
    cfg_job: bool = False  # --cfg job: print the resolved config and stop


# Hydra's own flags, which hallu's compose API does not run: what to type instead, one line each.
HYDRA_FLAGS = {
    "--cfg": "hallu prints no Hydra runtime config; --cfg job prints the resolved config",
    "-c": "hallu prints no Hydra runtime config; --cfg job prints the resolved config",
    "--info": "use --cfg job (the resolved config) or --help (groups, options and keys)",
    "-i": "use --cfg job (the resolved config) or --help (groups, options and keys)",
    "--shell-completion": "hallu has no shell completion; --help lists every group and key",
    "-sc": "hallu has no shell completion; --help lists every group and key",
    "--hydra-help": "use --help: it lists hallu's groups, options and keys",
    "--resolve": "--cfg job prints the config already resolved",
    "--package": "--cfg job prints the whole resolved config",
    "-p": "--cfg job prints the whole resolved config",
    "--config-path": "use --config-dir DIR: your options beside the packaged ones",
    "-cp": "use --config-dir DIR: your options beside the packaged ones",
    "--config-name": "use --config-dir DIR: your options beside the packaged ones",
    "-cn": "use --config-dir DIR: your options beside the packaged ones",
    "--run": "runs are the default; -m/--multirun sweeps",
    "-r": "runs are the default; -m/--multirun sweeps",
    "--experimental-rerun": "rerun with the same run_id=ID: finished work is kept",
}


def parse(argv: list[str]) -> Args:
    """Split hallu's flags from Hydra overrides; raises UserError for a flag without its value."""
    out = Args()
    it = iter(argv)
    for a in it:
        if a in ("-h", "--help", "help"):
            out.help = True
        elif a in ("-m", "--multirun"):
            out.multirun = True
        elif a in ("--config-dir", "-cd"):
            out.config_dir = next(it, None)
            if not out.config_dir:
                raise UserError(f"{a} needs a directory: {a} DIR")
        elif a.startswith("--config-dir="):
            out.config_dir = a.split("=", 1)[1]
        elif a in ("--cfg", "-c") or a.split("=", 1)[0] in ("--cfg", "-c"):
            what = a.split("=", 1)[1] if "=" in a else next(it, "")
            if what != "job":
                shown = a if "=" in a else f"{a} {what}".rstrip()
                raise UserError(f"{shown}: {HYDRA_FLAGS['--cfg']}")
            out.cfg_job = True
        elif a.split("=", 1)[0] in HYDRA_FLAGS:
            raise UserError(f"{a}: {HYDRA_FLAGS[a.split('=', 1)[0]]}")
        elif a.startswith("-") and "=" not in a:
            raise UserError(
                f"unknown flag {a!r}; hallu takes --config-dir DIR, -m/--multirun, --cfg job, "
                "--help and Hydra overrides key=value"
            )
        else:
            out.overrides.append(a)
    return out


# --- --help, generated from the config directories ---------------------------------------------


def key_docs(path: Path) -> dict[str, str]:
    """Dotted key -> the first sentence of the comment above it (or beside it) in a YAML file."""
    docs: dict[str, str] = {}
    stack: list[tuple[int, str]] = []  # (indent, key) of the enclosing mappings
    comment: list[str] = []
    for line in path.read_text().splitlines():
        text = line.strip()
        if text.startswith("#"):
            comment.append(text.lstrip("# "))
            continue
        m = re.match(r"^(\s*)([A-Za-z_]\w*):(.*)$", line)
        if not m:
            comment = []
            continue
        indent, key, rest = len(m.group(1)), m.group(2), m.group(3)
        stack = [(i, k) for i, k in stack if i < indent]
        dotted = ".".join([k for _, k in stack] + [key])
        inline = rest.split("#", 1)[1].strip() if "#" in rest else ""
        doc = " ".join(comment) or inline
        if doc:
            first = re.split(r"(?<=\.)\s+(?=[A-Z])", doc, maxsplit=1)[0].rstrip(".")
            docs[dotted] = first if len(first) <= 90 else first[:87] + "..."
        stack.append((indent, key))
        comment = []
    return docs


def help_text(config_dir: str | None = None) -> str:
    groups, _ = known_keys(config_dir)
    chosen = defaults(CONF_DIR)
    out = [
        "usage: hallu run [--config-dir DIR] [-m] [--cfg job] [group=option ...] [key=value ...]",
        "       (also python -m hallu.launch ...; hallu plan ... = mode=plan)",
        "",
        "Overrides use Hydra's syntax. -m/--multirun: one study per combination of a,b values.",
        "--cfg job: print the resolved config (YAML) and stop.",
        "--config-dir DIR (or $HALLU_CONFIG_DIR): your own options, e.g. DIR/model/mine.yaml.",
        "",
        "Config groups (* = default):",
    ]
    for g in groups:
        opts = [o + ("*" if chosen.get(g) == o else "") for o in group_options(g, config_dir)]
        how = f"{g}=NAME" if g in chosen else f"+{g}=NAME (adds it; no default)"
        if g == "sweep":
            how = "+sweep=NAME (replaces the default sweep)"
        out.append(f"  {how:44s} {', '.join(opts)}")
    out += ["", "Main keys (hallu/conf/config.yaml):"]
    for key, doc in key_docs(CONF_DIR / "config.yaml").items():
        if key in ("defaults", "sweep", "behavior"):
            continue
        out.append(f"  {key:28s} {doc}")
    _, keys = known_keys(config_dir)
    out += ["", "Each group's keys (group.key=value; mode=plan prints the resolved config):"]
    for g in groups:
        mine = sorted({k.split(".")[1] for k in keys if k.startswith(g + ".")})
        out.append(f"  {g + ':':10s} {', '.join(mine)}")
    out.append("Docs: README.md (Configuration).")
    return "\n".join(out)


def quiet_libraries(verbose: bool) -> None:
    """Unless verbose: no library logs or progress bars (hallu's own bars stay, one per stage).

    Environment variables reach Ray's local worker processes too; transformers' own switches
    cover the copy already imported in this process.
    """
    if verbose:
        return
    import os

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    from transformers.utils import logging as tlog

    tlog.set_verbosity_error()
    tlog.disable_progress_bar()
