"""Building blocks of the config schemas: range checks that name the key in full
(``trainer.lr: ...``), and the ``none`` option. Pure Python."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, TypeVar

from robustctl.errors import ConfigError


def require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")


def in_unit_interval(value: float, key: str, *, open_left: bool = False) -> None:
    lo_ok = value > 0 if open_left else value >= 0
    require(lo_ok and value <= 1, key, f"must be in {'(' if open_left else '['}0, 1], got {value}")


C = TypeVar("C")


def configured(config_type: type[C], config: C | None, params: dict[str, Any]) -> C:
    """What an object built "from a config or from its fields as keywords" runs with: ``config``
    with ``params`` applied (``__post_init__`` checks them again), else
    ``config_type(**params)``."""
    if config is None:
        return config_type(**params)
    return replace(config, **params) if params else config


@dataclass
class NoneConfig:
    """The ``none`` option of a group (no attack, no defense, no threat model)."""

    name: str = "none"
