"""Models: a registry from config name to constructor, and ``build_model``."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from robustctl.config.schema import ModelConfig
from robustctl.errors import ConfigError
from robustctl.models.resnet import ModelOutput, PredictionView, ResNet

# name -> constructor(cfg, **data-dependent kwargs)
MODELS: dict[str, Callable[..., ResNet]] = {
    name: (
        lambda cfg, **kw: ResNet(
            depth=cfg.depth,
            width=cfg.width,
            activation=cfg.activation,
            negative_slope=cfg.negative_slope,
            norm=cfg.norm,
            norm_groups=cfg.norm_groups,
            **kw,
        )
    )
    for name in ("resnet20", "resnet32", "resnet56")
}


def build_model(
    cfg: ModelConfig,
    *,
    num_classes: int,
    in_channels: int,
    mean: list[float] | None = None,
    std: list[float] | None = None,
    logit_sign: float = 1.0,
    transform: nn.Module | None = None,
) -> ResNet:
    """Instantiate ``cfg.name`` for data with ``in_channels`` and ``num_classes``; ``transform``
    (:func:`robustctl.transforms.build_transform`) is applied to every input first."""
    if cfg.name not in MODELS:
        raise ConfigError(
            f"model: unknown option {cfg.name!r} — valid: {', '.join(sorted(MODELS))}"
        )
    return MODELS[cfg.name](
        cfg,
        num_classes=num_classes,
        in_channels=in_channels,
        mean=mean,
        std=std,
        logit_sign=logit_sign,
        transform=transform,
    )


__all__ = ["MODELS", "ModelOutput", "PredictionView", "ResNet", "build_model"]
