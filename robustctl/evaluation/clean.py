"""Clean evaluation: test accuracy (``clean/accuracy``) and the confusion matrix.

C[i, j] = number of test images of true class i predicted as class j; accuracy = trace(C) / N.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from robustctl.evaluation.predict import predict


@dataclass
class CleanResult:
    accuracy: float
    confusion: np.ndarray        # [K, K] counts, rows = true class
    predictions: Tensor          # [N] predicted labels
    embeddings: Tensor           # [N, D]

    def metrics(self) -> dict[str, float]:
        return {"clean/accuracy": self.accuracy}


def confusion_matrix(y_true: Tensor, y_pred: Tensor, num_classes: int) -> np.ndarray:
    flat = (y_true.long() * num_classes + y_pred.long()).bincount(minlength=num_classes * num_classes)
    return flat.view(num_classes, num_classes).numpy()


def evaluate_clean(model: torch.nn.Module, x: Tensor, y: Tensor, batch_size: int = 512) -> CleanResult:
    logits, embeddings = predict(model, x, batch_size)
    pred = logits.argmax(1)
    conf = confusion_matrix(y, pred, logits.shape[1])
    acc = float(np.trace(conf) / max(conf.sum(), 1))
    return CleanResult(acc, conf, pred, embeddings)


def plot_confusion(conf: np.ndarray, class_names: tuple[str, ...] | list[str] | Sequence[str],
                   title: str = "confusion matrix", *, xlabel: str = "predicted", ylabel: str = "true",
                   cmap: str = "Blues", colorbar_label: str | None = None):
    """Heat map of row-normalised rates C[i, j] / sum_j C[i, j], annotated with the counts C[i, j].

    Used for the clean confusion matrix (true vs predicted) and the adversarial one (origin vs
    adversarial class, PDM Figure 1b). Returns a matplotlib Figure (Agg backend).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    k = len(conf)
    rates = conf / np.maximum(conf.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * k, 0.8 + 0.5 * k))
    im = ax.imshow(rates, cmap=cmap, vmin=0, vmax=1)
    ax.set_xticks(range(k), labels=list(class_names), rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), labels=list(class_names), fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    for i in range(k):
        for j in range(k):
            if conf[i, j]:
                ax.text(j, i, str(conf[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if rates[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label=colorbar_label)
    fig.tight_layout()
    return fig
