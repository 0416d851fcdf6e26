"""Configuration: typed config dataclasses, the registry of every group's options, and Hydra
composition of ``conf/``.

Attributes load lazily (PEP 562), so that ``robustctl.config.validation`` — imported by the
attack and detector modules for their own config dataclasses — does not pull in the whole
registry (which imports those modules back).
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "RunConfig": "robustctl.config.schema",
    "compose": "robustctl.config.composition",
    "config_dir": "robustctl.config.paths",
    "group_options": "robustctl.config.composition",
    "selected_options": "robustctl.config.composition",
    "validate": "robustctl.config.composition",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'robustctl.config' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)


__all__ = list(_EXPORTS)
