"""Cross-entropy, the paper's baseline: L = -log softmax(Z)_y, averaged over the batch."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from robustctl.losses.base import ClassificationLoss
from robustctl.losses.schema import OPTIONS, LossConfig
from robustctl.models.base import ModelOutput


class CrossEntropy(ClassificationLoss):
    """``weight * mean_i(-log p_{y_i})`` with p = softmax(Z); predicts with argmax(Z).

    Args: ``weight`` (float, default 1). Shapes: logits [N, K], labels [N] int64 in [0, K).
    """

    term = "ce"

    def sample_losses(self, output: ModelOutput, labels: Tensor) -> Tensor:
        return F.cross_entropy(output.logits, labels, reduction="none")


OPTIONS.add(LossConfig(name="ce"), lambda cfg: CrossEntropy(weight=cfg.weight))
