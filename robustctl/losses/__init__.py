"""Training losses: the ``loss`` group's options (:data:`OPTIONS`: option -> its config and its
builder, added by the module that implements it; configs in :mod:`robustctl.losses.schema`).

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

import importlib
import pkgutil

from robustctl.losses.base import ClassificationLoss, LossOutput, Pairs, TrainingLoss
from robustctl.losses.pairs import PairSampler, split_output
from robustctl.losses.schema import OPTIONS, LossConfig, loss_variant

# the paper's options first (the order ``robustctl config`` and the report list them), then any
# other module of the package: a new loss is one module that adds its option to OPTIONS
for _module in (
    "cross_entropy",
    "reverse_cross_entropy",
    "composite",
    "center",
    "contrastive_center",
):
    importlib.import_module(f"{__name__}.{_module}")
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


def build_loss(cfg: LossConfig) -> TrainingLoss:
    """The training loss of option ``cfg.name`` built from ``cfg``."""
    return OPTIONS.implementation(cfg.name)(cfg)


__all__ = [
    "OPTIONS",
    "ClassificationLoss",
    "LossConfig",
    "LossOutput",
    "PairSampler",
    "Pairs",
    "TrainingLoss",
    "build_loss",
    "loss_variant",
    "split_output",
]
