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

from robustctl.config.paths import config_dir
from robustctl.config.schema import RunConfig
from robustctl.errors import ConfigError
from robustctl.options import GROUPS, check_across_groups, group_configs, register


def group_options(conf: Path | None = None) -> dict[str, list[str]]:
    """Options of each config group: the registered ones and the YAML presets in
    ``conf/<group>/``."""
    conf = conf or config_dir()
    registered = group_configs()
    return {
        group: sorted({*registered[group], *(p.stem for p in (conf / group).glob("*.yaml"))})
        for group in GROUPS
    }


def compose_raw(overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """Hydra-compose ``conf/config.yaml`` with ``overrides``; returns a ``DictConfig``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    conf = config_dir()
    check_group_overrides(overrides, conf)
    register()
    try:
        if GlobalHydra.instance().is_initialized():  # inside a sweep job: Hydra's own search path
            return compose(config_name="config", overrides=list(overrides))
        with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides))
    except (
        HydraException,
        OmegaConfBaseException,
        ValueError,
    ) as exc:  # Hydra raises ValueError too
        raise ConfigError(
            _explain_hydra_error(exc, conf), hint="`robustctl config` lists every group's options"
        ) from exc


def check_group_overrides(overrides: list[str] | tuple[str, ...], conf: Path | None = None) -> None:
    """Refuse ``group=option`` overrides naming an option that has no YAML, listing the valid
    ones."""
    options = group_options(conf)
    for override in overrides:
        key, sep, value = override.lstrip("+").partition("=")
        if not sep or key not in options:
            continue
        if "," in value:
            raise ConfigError(
                f"{override!r} lists several {key} options",
                hint="sweeps need -m/--multirun (e.g. `robustctl run -m loss=ce,rce`)",
            )
        if value not in options[key]:
            raise ConfigError(
                f"unknown {key} option {value!r} — valid {key} options: {', '.join(options[key])}"
            )


def _option_keys(object_type: str) -> list[str] | None:
    """Fields of the config dataclass called ``object_type`` (the option being overridden)."""
    for options in group_configs().values():
        for node in options.values():
            if type(node).__name__ == object_type:
                return [f.name for f in dataclasses.fields(node)]
    return None


def _explain_hydra_error(exc: BaseException, conf: Path) -> str:
    """Hydra's messages are multi-line: keep the first line, add the cause (OmegaConf's message
    with the full key and the option's type) and the valid options or keys."""
    message = str(exc)
    first = message.strip().splitlines()[0] if message.strip() else "invalid override"
    cause = str(exc.__cause__ or "")
    options = group_options(conf)
    for group, names in options.items():
        if f"'{group}/" in message or f"'{group}'" in message:
            return f"{first} — valid {group} options: {', '.join(names)}"
    detail = {
        k.strip(): v.strip() for k, _, v in (line.partition(":") for line in cause.splitlines()[1:])
    }
    object_type = cause.rsplit("object_type=", 1)[1].strip() if "object_type=" in cause else ""
    if "Could not override" in message or "Key '" in message:
        key = detail.get("full_key") or (message.split("'")[1] if "'" in message else "")
        valid = _option_keys(object_type)
        if valid is not None:
            return f"unknown key {key!r} — valid keys of {object_type}: {', '.join(valid)}"
        return f"unknown key {key!r} — valid top-level keys: {', '.join(GROUPS)}, work_dir, debug"
    if cause:
        key = detail.get("full_key", "")
        return f"{key + ': ' if key else ''}{cause.splitlines()[0]} ({first})"
    return first


def validate(cfg: Any, cwd: str | Path | None = None) -> RunConfig:
    """Check every group against its schema and return the typed run configuration.

    Relative paths (``work_dir``) are resolved against ``cwd`` (default: the current directory)
    so that Hydra's per-run output folders and parallel launchers all see the same locations.
    """
    unknown = set(cfg) - set(GROUPS) - {"work_dir", "debug", "hydra"}
    if unknown:
        raise ConfigError(
            f"unknown top-level key(s) {', '.join(sorted(unknown))} — "
            f"valid: {', '.join(GROUPS)}, work_dir, debug"
        )
    groups = {group: _validate_group(group, cfg.get(group)) for group in GROUPS}
    check_across_groups(groups)
    work_dir = Path(cwd or os.getcwd(), str(cfg.get("work_dir", "."))).resolve()
    return RunConfig(**groups, work_dir=str(work_dir), debug=bool(cfg.get("debug", False)))


def _validate_group(group: str, node: Any) -> Any:
    """The group's config dataclass, built (and range-checked) from its composed node."""
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import ConfigKeyError, ValidationError

    if not isinstance(node, DictConfig) or OmegaConf.get_type(node) in (None, dict):
        options = ", ".join(group_options()[group])
        raise ConfigError(
            f"{group}: not one of the group's options — valid {group} options: {options}"
        )
    try:
        return OmegaConf.to_object(node)
    except (
        ConfigError
    ) as exc:  # a nested config (threat_model.whitebox is C&W-wb's) names its keys attack.<key>
        if group == "threat_model" and exc.message.startswith("attack."):
            raise ConfigError(
                "threat_model.whitebox." + exc.message[len("attack.") :], hint=exc.hint
            ) from exc
        raise
    except ConfigKeyError as exc:
        raise ConfigError(f"unknown key in {group}: {str(exc).splitlines()[0]}") from exc
    except ValidationError as exc:
        key = getattr(exc, "full_key", "") or group
        detail = str(exc).strip().splitlines()[0]
        raise ConfigError(f"{key}: {detail}") from exc


def compose(overrides: list[str] | tuple[str, ...] = ()) -> tuple[Any, RunConfig]:
    """Compose and validate; returns ``(DictConfig, RunConfig)``."""
    raw = compose_raw(overrides)
    return raw, validate(raw)


def selected_options(container: dict[str, Any]) -> dict[str, str]:
    """The option chosen in each group: its ``name`` key, or ``default`` for single-schema
    groups."""
    chosen = {}
    for group in GROUPS:
        node = container.get(group)
        chosen[group] = (
            str(node["name"]) if isinstance(node, dict) and "name" in node else "default"
        )
    return chosen
