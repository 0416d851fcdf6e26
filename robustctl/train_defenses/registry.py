"""The ``train_defense`` group's options: each module of this package adds its own (config, the
class that implements it); ``none`` is plain training."""

from __future__ import annotations

from robustctl.config.registry import OptionRegistry
from robustctl.config.validation import NoneConfig

OPTIONS: OptionRegistry = OptionRegistry("train_defense")
OPTIONS.add(NoneConfig())
