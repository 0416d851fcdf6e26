"""Configuration building blocks that every layer may import: range checks that name the key
(:mod:`~robustctl.config.validation`), the option registry each package fills with its own
options (:mod:`~robustctl.config.registry`), the typed whole-run config
(:class:`~robustctl.config.schema.RunConfig`) and where ``conf/`` is
(:mod:`~robustctl.config.paths`).

Nothing here imports another robustctl package but :mod:`robustctl.errors`: composing ``conf/``
with Hydra, storing every group's options in its ConfigStore and the checks across groups live in
the application layer (:mod:`robustctl.composition`, :mod:`robustctl.options`).
"""

from __future__ import annotations

from robustctl.config.paths import config_dir
from robustctl.config.schema import RunConfig

__all__ = ["RunConfig", "config_dir"]
