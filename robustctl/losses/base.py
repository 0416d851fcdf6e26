"""The training-loss interface every option of the ``loss`` group implements.

``forward(output, labels, pairs=None) -> LossOutput``. ``total`` is what the trainer
back-propagates; ``terms`` are the weighted parts it logs as ``train/<term>`` (they sum to
``total``). A loss with ``needs_pairs = True`` (the Siamese term of PDM, Algorithm 1) also gets
``pairs``: a partner image for every sample, forwarded through the same network; see
:mod:`robustctl.losses.pairs` for how partners are drawn.
"""

from __future__ import annotations

from typing import NamedTuple

import torch.nn.functional as F
from torch import Tensor, nn

from robustctl.models.base import ModelOutput


class LossOutput(NamedTuple):
    total: Tensor  # scalar to back-propagate
    terms: dict[str, Tensor]  # each weighted term, detached by the caller for logging


class Pairs(NamedTuple):
    """The Siamese partners of a batch (PDM Algorithm 1), already forwarded through the model."""

    output: ModelOutput  # partners' logits [N, K] and embeddings [N, D]
    labels: Tensor  # [N] int64, the partners' labels
    same: Tensor  # [N] float, 1.0 where the partner shares the sample's class, else 0.0


class TrainingLoss(nn.Module):
    """``forward(output, labels, pairs=None) -> LossOutput``.

    ``logit_sign`` is the test-time transform the loss implies (-1 for reverse cross-entropy);
    the trainer stores it in the model, so every caller predicts as the loss intends.
    ``needs_pairs``: the trainer draws a Siamese partner per sample with probability
    ``same_class_probability`` (Q) of it sharing the sample's class, and passes ``pairs``.
    """

    logit_sign: float = 1.0
    needs_pairs: bool = False
    same_class_probability: float = 0.5

    def forward(
        self, output: ModelOutput, labels: Tensor, pairs: Pairs | None = None
    ) -> LossOutput:  # pragma: no cover - interface
        raise NotImplementedError

    def sample_losses(self, output: ModelOutput, labels: Tensor) -> Tensor:
        """Per-sample classification loss [N] (what the input-gradient diagnostic differentiates).

        Default: cross-entropy of the prediction logits ``logit_sign * Z``; losses override it.
        """
        return F.cross_entropy(self.logit_sign * output.logits, labels, reduction="none")


class ClassificationLoss(TrainingLoss):
    """A per-sample classification loss l(Z, y), averaged over the batch and scaled by ``weight``.

    With ``pairs`` the partner images are classified too (Algorithm 1: cls(p1) + cls(p2)), so the
    term is ``weight * (mean_i l(Z_i, y_i) + mean_i l(Z'_i, y'_i))``.
    """

    term: str = "cls"

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        self.weight = weight

    def forward(
        self, output: ModelOutput, labels: Tensor, pairs: Pairs | None = None
    ) -> LossOutput:
        value = self.sample_losses(output, labels).mean()
        if pairs is not None:
            value = value + self.sample_losses(pairs.output, pairs.labels).mean()
        value = self.weight * value
        return LossOutput(value, {self.term: value})
