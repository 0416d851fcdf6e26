"""Reverse cross-entropy (Pang et al. 2018, "Towards Robust Detection of Adversarial Examples").

With K classes the reverse label of class y is R_y[y] = 0 and R_y[j] = 1/(K-1) for j != y; the loss
is L = -sum_j R_y[j] log softmax(Z)_j, averaged over the batch. Training pushes the true class's
logit *down*, so the model predicts with the **negated logits**: prediction = argmax(-Z),
probabilities = softmax(-Z) (``logit_sign = -1``; the trainer stores it in the model).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from robustctl.losses.base import ClassificationLoss
from robustctl.losses.schema import OPTIONS, LossConfig
from robustctl.models.base import ModelOutput


def reverse_labels(labels: Tensor, num_classes: int) -> Tensor:
    """R [N, K]: 0 on the true class, 1/(K-1) elsewhere (rows sum to 1)."""
    if num_classes < 2:
        raise ValueError(f"reverse labels need at least 2 classes, got {num_classes}")
    one_hot = F.one_hot(labels, num_classes).float()
    return (1.0 - one_hot) / (num_classes - 1)


def reverse_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Per-sample RCE [N] = -sum_j R_y[j] log softmax(Z)_j, for logits [N, K] and labels [N]."""
    log_p = F.log_softmax(logits, dim=1)
    return -(reverse_labels(labels, logits.shape[1]).to(log_p.dtype) * log_p).sum(dim=1)


class ReverseCrossEntropy(ClassificationLoss):
    """``weight * mean_i RCE(Z_i, y_i)``; predicts with argmax(-Z). Args: ``weight`` (default 1)."""

    term = "rce"
    logit_sign = -1.0

    def sample_losses(self, output: ModelOutput, labels: Tensor) -> Tensor:
        return reverse_cross_entropy(output.logits, labels)


OPTIONS.add(
    LossConfig(name="rce", classification="rce"),
    lambda cfg: ReverseCrossEntropy(weight=cfg.weight),
)
