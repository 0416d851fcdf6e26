"""Figures of the evaluation (matplotlib, Agg backend): confusion heat maps (clean and
adversarial, PDM Figure 1b) and grids of clean / adversarial / difference images."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (headless runs)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def confusion_matrix(y_true: Tensor, y_pred: Tensor, num_classes: int) -> np.ndarray:
    """C[i, j] = number of examples of true class i predicted as class j."""
    flat = (y_true.long() * num_classes + y_pred.long()).bincount(
        minlength=num_classes * num_classes
    )
    return flat.view(num_classes, num_classes).numpy()


def plot_confusion(
    conf: np.ndarray,
    class_names: Sequence[str],
    title: str = "confusion matrix",
    *,
    xlabel: str = "predicted",
    ylabel: str = "true",
    cmap: str = "Blues",
    colorbar_label: str | None = None,
) -> Any:
    """Heat map of row-normalised rates C[i, j] / sum_j C[i, j], annotated with the counts C[i, j].

    Used for the clean confusion matrix (true vs predicted) and the adversarial one (origin vs
    adversarial class, PDM Figure 1b).
    """
    plt = pyplot()
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
                ax.text(
                    j,
                    i,
                    str(conf[i, j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if rates[i, j] > 0.5 else "black",
                )
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label=colorbar_label)
    fig.tight_layout()
    return fig


def adversarial_confusion_figure(
    orig_labels: Tensor,
    adv_labels: Tensor,
    class_names: Sequence[str],
    title: str = "origin vs adversarial class",
) -> Any:
    """Counts C[i, j] of adversarial examples of origin class i classified as j (PDM Figure 1b)."""
    k = len(class_names)
    conf = confusion_matrix(
        torch.as_tensor(orig_labels).cpu(), torch.as_tensor(adv_labels).cpu(), k
    )
    return plot_confusion(
        conf,
        class_names,
        f"{title} (n={int(conf.sum())})",
        xlabel="adversarial class",
        ylabel="origin class",
        cmap="Reds",
        colorbar_label="fraction of row",
    )


def _as_image(t: Tensor) -> np.ndarray:
    t = t.detach().cpu().float()
    return t[0].numpy() if t.shape[0] == 1 else t.permute(1, 2, 0).numpy()


def example_grid_figure(
    x: Tensor,
    x_adv: Tensor,
    labels: Tensor | None = None,
    adv_labels: Tensor | None = None,
    class_names: Sequence[str] | None = None,
    n: int = 8,
    title: str | None = None,
) -> Any:
    """Columns of up to ``n`` examples; rows: clean, adversarial, |x' - x| (scaled to its max)."""
    plt = pyplot()
    n = max(1, min(n, len(x)))

    def label(t: Tensor | None, i: int) -> str:
        if t is None:
            return ""
        c = int(t[i])
        return class_names[c] if class_names is not None and c < len(class_names) else str(c)

    fig, axes = plt.subplots(3, n, figsize=(1.3 * n, 4.2), squeeze=False)
    cmap = "gray" if x.shape[1] == 1 else None
    for i in range(n):
        diff = (x_adv[i] - x[i]).abs()
        diff = diff / diff.max().clamp_min(1e-12)
        for row, (img, text) in enumerate(
            (
                (x[i], label(labels, i)),
                (x_adv[i], label(adv_labels, i)),
                (diff, f"Linf {float((x_adv[i] - x[i]).abs().max()):.3f}"),
            )
        ):
            ax = axes[row, i]
            ax.imshow(_as_image(img).clip(0, 1), cmap=cmap, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(text, fontsize=7)
    for row, name in enumerate(("clean", "adversarial", "|x' - x|")):
        axes[row, 0].set_ylabel(name, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
