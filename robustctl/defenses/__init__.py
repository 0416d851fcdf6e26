"""Defenses: the ``defense`` config group's options and their implementations.

``DEFENSES`` maps each option of ``conf/defense/`` to the class that implements it, or to None
for ``none``. Detectors (today: ``kde``) have ``from_config(cfg)`` and ``fit(...)``;
:func:`build_detector` builds and fits the configured one.

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

from robustctl.defenses.kde import KDEConfig, KDEDetector, threshold_at
from robustctl.errors import ConfigError

DEFENSES: dict[str, type[KDEDetector] | None] = {
    "none": None,
    "kde": KDEDetector,
}


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
    name = getattr(cfg, "name", None)
    if name not in DEFENSES:
        raise ConfigError(
            f"defense: unknown option {name!r} — "
            f"valid defense options: {', '.join(sorted(DEFENSES))}"
        )
    cls = DEFENSES[name]
    if cls is None:
        return None
    gen = generator if generator is not None else torch.Generator().manual_seed(int(cfg.seed))
    return cls.from_config(cfg).fit(embeddings, labels, generator=gen, held_out=held_out)


def fit_detector(
    cfg: Any, model: torch.nn.Module, data: Any, batch_size: int = 512, outputs: Any = None
) -> KDEDetector | None:
    """The ``defense`` detector fitted on ``model``'s clean training embeddings of ``data``, with
    the validation split as held-out data (automatic bandwidth); None for ``defense=none``.
    ``outputs``: the evaluation's :class:`~robustctl.inference.ModelOutputs` (a new one if None).

    The detector is returned on the model's device (the device rule: a detector lives where the
    model it watches lives, so C&W-wb can add its density term to the model's logits there)."""
    from robustctl.inference import ModelOutputs, model_device

    if getattr(cfg, "name", None) == "none":
        return None
    outputs = outputs or ModelOutputs(model, data, batch_size)
    train_emb = outputs.split("train").embeddings
    held_out = (outputs.split("val").embeddings, data.y_val) if len(data.y_val) else None
    detector = build_detector(cfg, train_emb, data.y_train, held_out=held_out)
    return None if detector is None else detector.to(model_device(model))


def require_detector(detector: Any | None, needed_by: str) -> Any:
    """``detector`` itself; a :class:`ConfigError` naming ``needed_by`` when there is none."""
    if detector is None:
        raise ConfigError(
            f"{needed_by} attacks a detector, but defense=none", hint="add defense=kde"
        )
    return detector


__all__ = [
    "DEFENSES",
    "KDEConfig",
    "KDEDetector",
    "build_detector",
    "fit_detector",
    "require_detector",
    "threshold_at",
]
