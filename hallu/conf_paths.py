"""Where configs come from: the packaged hallu/conf and a user's own directory. No pydantic here.

The lowest config layer: hallu/suggest.py (did you mean), hallu/config.py (compose, validate) and
the command line all list groups and options from these directories, so none imports another
for them.
"""

from __future__ import annotations

import os
from pathlib import Path

from hallu.errors import UserError

# The packaged configs (Hydra's pkg://hallu.conf). A user's own directory (--config-dir DIR or
# $HALLU_CONFIG_DIR) is added to Hydra's search path: its files add options to the packaged groups
# (model/mine.yaml -> model=mine). Hydra would silently prefer a packaged file of the same name, so
# such a clash is refused.
CONF_DIR = Path(__file__).resolve().parent / "conf"
CONFIG_DIR_ENV = "HALLU_CONFIG_DIR"


def user_config_dir(config_dir: str | None = None) -> Path | None:
    """The user's extra config directory: the argument, else $HALLU_CONFIG_DIR, else None."""
    given = config_dir or os.environ.get(CONFIG_DIR_ENV)
    if not given:
        return None
    path = Path(given).expanduser().resolve()
    if not path.is_dir():
        where = "--config-dir" if config_dir else f"${CONFIG_DIR_ENV}"
        raise UserError(f"{where}={given}: no such directory; give a directory of config groups")
    clashes = sorted(
        str(f.relative_to(path))
        for f in path.glob("*/*.yaml")
        if (CONF_DIR / f.relative_to(path)).exists()
    )
    if clashes:
        raise UserError(
            f"config dir {path}: {', '.join(clashes)} has the name of a packaged config, which "
            "Hydra would use instead; rename yours (e.g. model/my_toy.yaml -> model=my_toy)"
        )
    return path


def config_dirs(config_dir: str | None = None) -> list[Path]:
    """Where configs come from: the user's directory (if any), then the packaged one."""
    user = user_config_dir(config_dir)
    return ([user] if user else []) + [CONF_DIR]


def group_options(group: str, config_dir: str | None = None) -> list[str]:
    """Every option of a config group, packaged and the user's own."""
    return sorted({p.stem for d in config_dirs(config_dir) for p in (d / group).glob("*.yaml")})
