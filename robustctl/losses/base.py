"""The training-loss interface every option of the ``loss`` group implements."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor, nn

from robustctl.models.resnet import ModelOutput


class LossOutput(NamedTuple):
    total: Tensor             # scalar to back-propagate
    terms: dict[str, Tensor]  # each weighted term, detached by the caller for logging


class TrainingLoss(nn.Module):
    """``forward(output, labels) -> LossOutput``.

    ``logit_sign`` is the test-time transform the loss implies (-1 for reverse cross-entropy);
    the trainer stores it in the model, so every caller predicts as the loss intends.
    """

    logit_sign: float = 1.0

    def forward(self, output: ModelOutput, labels: Tensor) -> LossOutput:  # pragma: no cover - interface
        raise NotImplementedError
