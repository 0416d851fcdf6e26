"""Schemas of the ``attack`` group (pure Python). One dataclass per option, registered in ATTACK_SCHEMAS."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class NoneConfig:
    """The ``none`` option of a group that later work fills."""

    name: str = "none"


ATTACK_SCHEMAS: dict[str, type[Any]] = {"none": NoneConfig}
