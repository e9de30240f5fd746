"""The launcher's command line before Hydra sees it: flags, `help`, and "did you mean".

Hydra's own parser is used for overrides; this module only takes out hallu's flags
(`--config-dir DIR`, `-m/--multirun`, `-h/--help/help`) and turns Hydra's complaints about unknown
keys or options into a suggestion from the keys and options that exist. No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hallu.errors import UserError


@dataclass
class Args:
    overrides: list[str] = field(default_factory=list)
    config_dir: str | None = None
    multirun: bool = False
    help: bool = False


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
        elif a.startswith("-") and "=" not in a:
            raise UserError(
                f"unknown flag {a!r}; hallu takes --config-dir DIR, -m/--multirun, --help "
                "and Hydra overrides key=value"
            )
        else:
            out.overrides.append(a)
    return out
