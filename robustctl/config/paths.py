"""Where robustctl's packaged files are: the ``conf/`` folder Hydra composes (and whose
``conf/attack/`` presets the attack registry reads). Imports nothing of robustctl but its errors,
so every layer may ask."""

from __future__ import annotations

import os
from pathlib import Path

from robustctl.errors import ConfigError


def config_dir() -> Path:
    """The ``conf/`` folder: packaged inside the wheel, or beside the package in a checkout."""
    env = os.environ.get("ROBUSTCTL_CONFIG_DIR")
    candidates = [Path(env)] if env else []
    here = Path(__file__).resolve().parent.parent
    candidates += [here / "conf", here.parent / "conf"]
    for path in candidates:
        if (path / "config.yaml").is_file():
            return path
    raise ConfigError(
        f"no config.yaml found in {', '.join(str(c) for c in candidates)}",
        hint="reinstall robustctl (`make install`) or set ROBUSTCTL_CONFIG_DIR to the conf/ folder",
    )
