"""Training losses: a registry from the ``loss`` group's option name to a constructor.

| option | loss | module |
|---|---|---|
| ``ce`` | cross-entropy (baseline) | cross_entropy.py |
| ``rce`` | reverse cross-entropy, predicts with -Z | reverse_cross_entropy.py |
| ``siamese_rvl`` | CE + Siamese cosine + RVL | siamese.py, reduce_variance.py, composite.py |
| ``pdm`` | RCE + Siamese cosine + RVL | (same) |
| ``center`` | classification + center loss | center.py |
| ``contrastive_center`` | classification + contrastive-center loss | contrastive_center.py |

Center loss: Wen et al. 2016; contrastive-center loss: Qi & Su 2017.

``build_loss(cfg)`` needs only the config: terms that depend on the number of classes K (RVL's
per-class statistics, the center buffers [K, D]) read K from the logits' width at the first
forward, and center buffers take their stored size when a checkpoint is loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from robustctl.config.loss_schema import (
    CenterLossConfig,
    ContrastiveCenterLossConfig,
    LossConfig,
    PDMLossConfig,
)
from robustctl.errors import ConfigError
from robustctl.losses.base import ClassificationLoss, LossOutput, Pairs, TrainingLoss
from robustctl.losses.center import CenterLoss
from robustctl.losses.composite import CompositeLoss
from robustctl.losses.contrastive_center import ContrastiveCenterLoss
from robustctl.losses.cross_entropy import CrossEntropy
from robustctl.losses.pairs import PairSampler, split_output
from robustctl.losses.reduce_variance import ReduceVarianceLoss
from robustctl.losses.reverse_cross_entropy import ReverseCrossEntropy

CLASSIFICATION: dict[str, type[ClassificationLoss]] = {
    "ce": CrossEntropy,
    "rce": ReverseCrossEntropy,
}


def _classification(cfg: LossConfig) -> ClassificationLoss:
    return CLASSIFICATION[cfg.classification](weight=cfg.weight)


def _pdm(cfg: PDMLossConfig) -> TrainingLoss:
    rvl = ReduceVarianceLoss(cfg.rvl_normalization)
    return CompositeLoss(
        _classification(cfg),
        {"rvl": (cfg.rvl_weight, rvl)},
        siamese_weight=cfg.siamese_weight,
        q=cfg.q,
    )


def _center(cfg: CenterLossConfig) -> TrainingLoss:
    term = CenterLoss(alpha=cfg.center_alpha)
    return CompositeLoss(_classification(cfg), {"center": (cfg.center_weight, term)})


def _contrastive_center(cfg: ContrastiveCenterLossConfig) -> TrainingLoss:
    term = ContrastiveCenterLoss(alpha=cfg.center_alpha, delta=cfg.delta)
    return CompositeLoss(_classification(cfg), {"contrastive_center": (cfg.center_weight, term)})


# option name -> constructor(loss config)
LOSSES: dict[str, Callable[[Any], TrainingLoss]] = {
    "ce": lambda cfg: CrossEntropy(weight=cfg.weight),
    "rce": lambda cfg: ReverseCrossEntropy(weight=cfg.weight),
    "siamese_rvl": _pdm,
    "pdm": _pdm,
    "center": _center,
    "contrastive_center": _contrastive_center,
}


def build_loss(cfg: LossConfig) -> TrainingLoss:
    if cfg.name not in LOSSES:
        raise ConfigError(f"loss: unknown option {cfg.name!r} — valid: {', '.join(sorted(LOSSES))}")
    return LOSSES[cfg.name](cfg)


__all__ = [
    "LOSSES",
    "LossOutput",
    "PairSampler",
    "Pairs",
    "TrainingLoss",
    "build_loss",
    "split_output",
]
