"""Cross-entropy, the paper's baseline: L = -log softmax(Z)_y, averaged over the batch."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from robustctl.losses.base import LossOutput, TrainingLoss
from robustctl.models.resnet import ModelOutput


class CrossEntropy(TrainingLoss):
    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        self.weight = weight

    def forward(self, output: ModelOutput, labels: Tensor) -> LossOutput:
        ce = self.weight * F.cross_entropy(output.logits, labels)
        return LossOutput(ce, {"ce": ce})
