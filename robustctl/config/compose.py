"""Compose ``conf/`` with Hydra and validate the result against the structured schemas.

``compose(overrides)`` returns the Hydra config (``DictConfig``, for logging and printing) and
the typed :class:`~robustctl.config.schema.RunConfig` built from it. Every failure is a
:class:`~robustctl.errors.ConfigError` that names the key and lists the valid choices.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from robustctl.config.schema import GROUP_SCHEMAS, RunConfig
from robustctl.errors import ConfigError

GROUPS = ("dataset", "model", "loss", "trainer", "tracking", "evaluate", "attack", "defense", "threat_model")


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


def group_options(conf: Path | None = None) -> dict[str, list[str]]:
    """Options of each config group, read from the YAML files in ``conf/<group>/``."""
    conf = conf or config_dir()
    return {
        group: sorted(p.stem for p in (conf / group).glob("*.yaml"))
        for group in GROUPS
        if (conf / group).is_dir()
    }


def compose_raw(overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """Hydra-compose ``conf/config.yaml`` with ``overrides``; returns a ``DictConfig``."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    conf = config_dir()
    check_group_overrides(overrides, conf)
    try:
        with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException, ValueError) as exc:  # Hydra raises ValueError too
        raise ConfigError(_explain_hydra_error(str(exc), conf), hint="`robustctl config` lists every group's options") from exc


def check_group_overrides(overrides: list[str] | tuple[str, ...], conf: Path | None = None) -> None:
    """Refuse ``group=option`` overrides naming an option that has no YAML, listing the valid ones."""
    options = group_options(conf)
    for override in overrides:
        key, sep, value = override.lstrip("+").partition("=")
        if not sep or key not in options:
            continue
        if "," in value:
            raise ConfigError(f"{override!r} lists several {key} options",
                              hint="sweeps need -m/--multirun (e.g. `robustctl run -m loss=ce,rce`)")
        if value not in options[key]:
            raise ConfigError(f"unknown {key} option {value!r} — valid {key} options: {', '.join(options[key])}")


def _explain_hydra_error(message: str, conf: Path) -> str:
    """Hydra's messages are multi-line; keep the first line and add the valid options."""
    first = message.strip().splitlines()[0] if message.strip() else "invalid override"
    options = group_options(conf)
    for group, names in options.items():
        if f"'{group}/" in message or f"'{group}'" in message:
            return f"{first} — valid {group} options: {', '.join(names)}"
    if "Could not override" in message or "Key '" in message:
        key = message.split("'")[1] if "'" in message else ""
        group = key.split(".")[0]
        schema = GROUP_SCHEMAS.get(group)
        if isinstance(schema, type) and dataclasses.is_dataclass(schema):
            valid = ", ".join(f.name for f in dataclasses.fields(schema))
            return f"unknown key {key!r} — valid {group} keys: {valid}"
    return first


def validate(cfg: Any, cwd: str | Path | None = None) -> RunConfig:
    """Check every group against its schema and return the typed run configuration.

    Relative paths (``work_dir``) are resolved against ``cwd`` (default: the current directory)
    so that Hydra's per-run output folders and parallel launchers all see the same locations.
    """
    from omegaconf import OmegaConf

    container = OmegaConf.to_container(cfg, resolve=True)
    container.pop("hydra", None)
    container.pop("command", None)  # set by the CLI for sweep jobs
    unknown = set(container) - set(GROUPS) - {"work_dir", "debug"}
    if unknown:
        raise ConfigError(
            f"unknown top-level key(s) {', '.join(sorted(unknown))} — valid: {', '.join(GROUPS)}, work_dir, debug"
        )
    groups = {group: _validate_group(group, container.get(group) or {}) for group in GROUPS}
    work_dir = Path(cwd or os.getcwd(), str(container.get("work_dir", "."))).resolve()
    return RunConfig(**groups, work_dir=str(work_dir), debug=bool(container.get("debug", False)))


def _validate_group(group: str, node: dict[str, Any]) -> Any:
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigKeyError, ValidationError

    schemas = GROUP_SCHEMAS[group]
    if isinstance(schemas, dict):
        name = node.get("name")
        if name not in schemas:
            raise ConfigError(f"{group}: unknown option {name!r} — valid {group} options: {', '.join(sorted(schemas))}")
        schema = schemas[name]
    else:
        schema = schemas
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), node)
        return OmegaConf.to_object(merged)
    except ConfigKeyError as exc:
        valid = ", ".join(f.name for f in dataclasses.fields(schema))
        key = getattr(exc, "key", None) or str(exc).split("'")[1]
        raise ConfigError(f"unknown key {group}.{key} — valid {group} keys: {valid}") from exc
    except ValidationError as exc:
        key = getattr(exc, "full_key", "") or ""
        detail = str(exc).strip().splitlines()[0]
        raise ConfigError(f"{group}.{key}: {detail}") from exc


def compose(overrides: list[str] | tuple[str, ...] = ()) -> tuple[Any, RunConfig]:
    """Compose and validate; returns ``(DictConfig, RunConfig)``."""
    raw = compose_raw(overrides)
    return raw, validate(raw)


def selected_options(container: dict[str, Any]) -> dict[str, str]:
    """The option chosen in each group: its ``name`` key, or ``default`` for single-schema groups."""
    chosen = {}
    for group in GROUPS:
        node = container.get(group)
        chosen[group] = str(node["name"]) if isinstance(node, dict) and "name" in node else "default"
    return chosen
