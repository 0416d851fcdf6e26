"""Schemas of the ``defense`` and ``threat_model`` groups (pure Python)."""

from __future__ import annotations

from typing import Any

from robustctl.config.attack_schema import NoneConfig

DEFENSE_SCHEMAS: dict[str, type[Any]] = {"none": NoneConfig}
THREAT_MODEL_SCHEMAS: dict[str, type[Any]] = {"none": NoneConfig}
