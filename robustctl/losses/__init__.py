"""Training losses: a registry from the ``loss`` group's option name to a constructor."""

from __future__ import annotations

from collections.abc import Callable

from robustctl.config.schema import LossConfig
from robustctl.errors import ConfigError
from robustctl.losses.base import LossOutput, TrainingLoss
from robustctl.losses.cross_entropy import CrossEntropy

LOSSES: dict[str, Callable[[LossConfig], TrainingLoss]] = {
    "ce": lambda cfg: CrossEntropy(weight=cfg.weight),
}


def build_loss(cfg: LossConfig) -> TrainingLoss:
    if cfg.name not in LOSSES:
        raise ConfigError(f"loss: unknown option {cfg.name!r} — valid: {', '.join(sorted(LOSSES))}")
    return LOSSES[cfg.name](cfg)


__all__ = ["LOSSES", "LossOutput", "TrainingLoss", "build_loss"]
