"""Input transforms: the ``transform`` config group's options (the taxonomy's Category 2 defenses
that remove the perturbation before the network sees it).

:data:`OPTIONS` maps each option to the :class:`~robustctl.transforms.base.InputTransform` class
that implements it (its ``config_type`` is the option's config); a class registers itself by
being defined in a module of this package (all are imported here), so a new transform is one
module. :func:`build_transform` makes the
module the model applies to every input, in training and at test time (``nn.Identity`` for
``none``); :func:`transform_from_meta` rebuilds it from what a checkpoint recorded.

Example:
    >>> t = build_transform(JPEGConfig(quality=50))
    >>> t(x)                      # the JPEG round trip; attacks see it through BPDA
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import asdict
from typing import Any

from torch import nn

from robustctl.transforms.base import (
    OPTIONS,
    InputTransform,
    TransformConfig,
    straight_through,
    zero_gradient,
)
from robustctl.transforms.bit_depth import BitDepth, BitDepthConfig
from robustctl.transforms.edges import Edges, EdgesConfig
from robustctl.transforms.jpeg import JPEG, JPEGConfig
from robustctl.transforms.lowpass import Lowpass, LowpassConfig
from robustctl.transforms.median import Median, MedianConfig

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


def transform_configs() -> dict[str, Any]:
    """Every option of the ``transform`` group with its default config."""
    return OPTIONS.configs()


def transform_class(name: str | None) -> type[InputTransform] | None:
    """The class of option ``name`` (None for ``none``); unknown names are refused with the
    valid ones."""
    return OPTIONS.implementation(str(name))


def build_transform(cfg: Any) -> nn.Module:
    """The module the model applies to its [0, 1] inputs: the ``transform`` config's transform,
    or ``nn.Identity`` for ``none`` (and for no config)."""
    cls = transform_class(getattr(cfg, "name", "none"))
    return nn.Identity() if cls is None else cls(cfg)


def transform_meta(cfg: Any) -> dict[str, Any] | None:
    """What a checkpoint records of the transform (its config as a dict), or None for
    ``none``."""
    if cfg is None or transform_class(getattr(cfg, "name", "none")) is None:
        return None
    return asdict(cfg)


def transform_from_meta(meta: dict[str, Any] | None) -> nn.Module:
    """The module :func:`transform_meta` described (``nn.Identity`` for None: checkpoints
    written before transforms existed had none)."""
    if not meta:
        return nn.Identity()
    cls = transform_class(meta.get("name"))
    return nn.Identity() if cls is None else cls(cls.config_type(**meta))


__all__ = [
    "OPTIONS",
    "BitDepth",
    "BitDepthConfig",
    "Edges",
    "EdgesConfig",
    "InputTransform",
    "JPEG",
    "JPEGConfig",
    "Lowpass",
    "LowpassConfig",
    "Median",
    "MedianConfig",
    "TransformConfig",
    "build_transform",
    "straight_through",
    "transform_class",
    "transform_configs",
    "transform_from_meta",
    "transform_meta",
    "zero_gradient",
]
