"""Defenses: the ``defense`` config group's options and their implementations.

:data:`OPTIONS` maps each option to the :class:`~robustctl.defenses.base.Detector` class that
implements it (its ``config_type`` is the option's config), or to None for ``none``; a class
registers itself by being defined in a module of this package (all are imported here).
:func:`fit_detector` builds the configured detector and fits it on a model and its data
(:class:`~robustctl.defenses.base.FitInputs`); :func:`build_detector` fits an embedding detector
(``kde``) on given embeddings.

Example (the gray-box protocol):
    >>> from robustctl.inference import predict
    >>> _, z_train = predict(model, x_train)
    >>> det = build_detector(cfg.defense, z_train, y_train)   # None for defense=none
    >>> det.metrics()                                          # {"kde/bandwidth": ..., ...}
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from robustctl.defenses.base import (
    OPTIONS,
    Detector,
    FitInputs,
    Probe,
    score_images,
    score_outputs,
)
from robustctl.defenses.kde import KDEConfig, KDEDetector, threshold_at
from robustctl.errors import ConfigError


def _import_every_detector_module() -> None:
    """Import each module of this package, so a detector registers itself by being a file here
    (:data:`~robustctl.defenses.base.OPTIONS`); the order is the listing order of options."""
    import importlib
    import pkgutil

    for module in ("kde", "uncertainty", "combined"):  # the paper's detector, then Feinman's
        importlib.import_module(f"{__name__}.{module}")
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


_import_every_detector_module()


def defense_configs() -> dict[str, Any]:
    """Every option of the ``defense`` group (``none`` included) with its default config."""
    return OPTIONS.configs()


def detector_class(name: str | None) -> type[Detector] | None:
    """The class of defense option ``name`` (None for ``none``); unknown names are refused with
    the valid ones."""
    return OPTIONS.implementation(str(name))


def build_detector(
    cfg: Any,
    embeddings: Tensor,
    labels: Tensor,
    *,
    held_out: tuple[Tensor, Tensor] | None = None,
    generator: torch.Generator | None = None,
) -> KDEDetector | None:
    """The detector of the ``defense`` config, fitted on clean training embeddings, or None.

    Args:
        cfg: the ``defense`` group's config (``name`` selects the option; ``kde`` reads
            ``per_class``, ``bandwidth``, the grid, ``holdout_fraction``, ``chunk_size``, ``seed``).
        embeddings, labels: [N, D] clean training embeddings and their [N] true labels; the
            detector's buffers live on the embeddings' device.
        held_out: optional clean ([H, D], [H]) data for the ``"auto"`` bandwidth.
        generator: subset/split randomness (default: seeded with ``cfg.seed``).
    """
    cls = detector_class(getattr(cfg, "name", None))
    if cls is None:
        return None
    if not hasattr(cls, "fit"):
        raise ConfigError(f"defense={cfg.name} is not fitted on embeddings alone: use fit_detector")
    gen = generator if generator is not None else torch.Generator().manual_seed(int(cfg.seed))
    return cls.from_config(cfg).fit(embeddings, labels, generator=gen, held_out=held_out)


def fit_detector(
    cfg: Any,
    model: torch.nn.Module,
    data: Any,
    batch_size: int = 512,
    outputs: Any = None,
    craft: Any = None,
) -> Detector | None:
    """The ``defense`` detector fitted on ``model`` and the clean training (and, where the method
    asks, validation) data of ``data``; None for ``defense=none``. ``outputs``: the evaluation's
    :class:`~robustctl.inference.ModelOutputs` (a new one if None); ``craft``: how to make
    adversarial examples of training or validation images, for detectors fitted on them
    (:class:`~robustctl.defenses.base.FitInputs`).

    The detector is returned on the model's device (the device rule: a detector lives where the
    model it watches lives, so C&W-wb can add its score to the model's logits there)."""
    from robustctl.inference import ModelOutputs, model_device

    cls = detector_class(getattr(cfg, "name", None))
    if cls is None:
        return None
    inputs = FitInputs(
        model,
        data,
        outputs or ModelOutputs(model, data, batch_size),
        batch_size,
        torch.Generator().manual_seed(int(getattr(cfg, "seed", 0))),
        craft,
    )
    return cls.from_config(cfg).fit_on(inputs).to(model_device(model))


def require_detector(detector: Any | None, needed_by: str) -> Any:
    """``detector`` itself; a :class:`ConfigError` naming ``needed_by`` when there is none."""
    if detector is None:
        raise ConfigError(
            f"{needed_by} attacks a detector, but defense=none",
            hint=f"add a detector: defense={' or '.join(n for n in OPTIONS if n != 'none')}",
        )
    return detector


__all__ = [
    "OPTIONS",
    "Detector",
    "FitInputs",
    "Probe",
    "detector_class",
    "score_images",
    "score_outputs",
    "KDEConfig",
    "KDEDetector",
    "build_detector",
    "fit_detector",
    "require_detector",
    "threshold_at",
]
