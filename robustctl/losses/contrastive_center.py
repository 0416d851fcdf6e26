"""Contrastive-center loss (Qi & Su 2017, "Contrastive-center loss for deep neural networks"),
used with a classification loss (docs/method.md section 3, taxonomy Category 1).

    L_ctc = (1 / 2N) sum_i ||z_i - c_{y_i}||^2 / (sum_{j != y_i} ||z_i - c_j||^2 + delta)

It pulls each embedding toward its class center and pushes it away from the other centers;
``delta`` (default 1) keeps the ratio finite. Averaged over the batch (the paper sums).

Departure from the paper: Qi & Su learn the centers by gradient descent on L_ctc; here, as for
the center loss, the centers are buffers that follow the class means by Wen et al.'s update rule
(see :mod:`robustctl.losses.center`), so no optimizer needs to know about them. The embeddings
still receive the full gradient of the ratio, including the push away from other centers.
"""

from __future__ import annotations

from torch import Tensor

from robustctl.losses.base import TrainingLoss
from robustctl.losses.center import CenterLoss
from robustctl.losses.composite import CompositeLoss, classification_term
from robustctl.losses.schema import OPTIONS, ContrastiveCenterLossConfig


class ContrastiveCenterLoss(CenterLoss):
    """Args: ``num_classes`` (K), ``embedding_dim`` (D) (optional, as for :class:`CenterLoss`),
    ``alpha`` (center update rate, 0.5), ``delta`` (> 0, default 1).
    ``forward(z [N, D], labels [N], num_classes=None) -> scalar``."""

    def __init__(
        self,
        num_classes: int | None = None,
        embedding_dim: int | None = None,
        alpha: float = 0.5,
        delta: float = 1.0,
    ) -> None:
        super().__init__(num_classes, embedding_dim, alpha)
        self.delta = delta

    def loss(self, z: Tensor, labels: Tensor) -> Tensor:
        sq = (
            (z[:, None, :] - self.centers.to(z.dtype)[None]).pow(2).sum(dim=2)
        )  # [N, K] ||z_i - c_j||^2
        own = sq.gather(1, labels[:, None]).squeeze(1)  # [N]
        others = sq.sum(dim=1) - own
        return 0.5 * (own / (others + self.delta)).mean()


def build_contrastive_center(cfg: ContrastiveCenterLossConfig) -> TrainingLoss:
    """Classification + contrastive-center loss (Qi & Su 2017)."""
    term = ContrastiveCenterLoss(alpha=cfg.center_alpha, delta=cfg.delta)
    return CompositeLoss(
        classification_term(cfg), {"contrastive_center": (cfg.center_weight, term)}
    )


OPTIONS.add(ContrastiveCenterLossConfig(name="contrastive_center"), build_contrastive_center)
