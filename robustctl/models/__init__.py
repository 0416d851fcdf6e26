"""Models: the ``model`` group's options (:data:`OPTIONS`, filled by each architecture's module)
and :func:`build_model`. Every module of this package is imported here, so a new architecture is
one file (:mod:`robustctl.models.base` says what it provides)."""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import Any

from torch import nn

from robustctl.models.base import OPTIONS, EmbeddingModel, ModelOutput
from robustctl.models.resnet import PredictionView, ResNet, ResNetConfig

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


def build_model(
    cfg: Any,
    *,
    num_classes: int,
    in_channels: int,
    mean: list[float] | None = None,
    std: list[float] | None = None,
    logit_sign: float = 1.0,
    transform: nn.Module | None = None,
) -> nn.Module:
    """Instantiate option ``cfg.name`` (its config ``cfg``) for data with ``in_channels`` and
    ``num_classes``; ``transform`` (:func:`robustctl.transforms.build_transform`) is applied to
    every input first."""
    return OPTIONS.implementation(cfg.name)(
        cfg,
        num_classes=num_classes,
        in_channels=in_channels,
        mean=mean,
        std=std,
        logit_sign=logit_sign,
        transform=transform,
    )


def model_config(name: str, **values: Any) -> Any:
    """The config of model option ``name`` with ``values`` set (its type's range checks run)."""
    OPTIONS.implementation(name)  # an unknown name is refused with the valid ones
    return dataclasses.replace(OPTIONS.configs()[name], **values)


__all__ = [
    "OPTIONS",
    "EmbeddingModel",
    "ModelOutput",
    "PredictionView",
    "ResNet",
    "ResNetConfig",
    "build_model",
    "model_config",
]
