"""Clean evaluation: test accuracy (``clean/accuracy``) and the confusion matrix.

C[i, j] = number of test images of true class i predicted as class j; accuracy = trace(C) / N.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from robustctl import metric_keys as keys
from robustctl.evaluation.figures import confusion_matrix
from robustctl.inference import SplitOutputs, predict


@dataclass
class CleanResult:
    accuracy: float
    confusion: np.ndarray  # [K, K] counts, rows = true class
    predictions: Tensor  # [N] predicted labels
    embeddings: Tensor  # [N, D]

    def metrics(self) -> dict[str, float]:
        return {keys.CLEAN_ACCURACY: self.accuracy}


def evaluate_clean(
    model: torch.nn.Module,
    x: Tensor,
    y: Tensor,
    batch_size: int = 512,
    outputs: SplitOutputs | None = None,
) -> CleanResult:
    """Accuracy and confusion of ``model`` on (x, y); ``outputs``: its outputs on x, if known."""
    logits, embeddings = (
        (outputs.logits, outputs.embeddings) if outputs else predict(model, x, batch_size)
    )
    pred = logits.argmax(1)
    conf = confusion_matrix(y, pred, logits.shape[1])
    acc = float(np.trace(conf) / max(conf.sum(), 1))
    return CleanResult(acc, conf, pred, embeddings)
