"""Center loss (Wen et al. 2016, "A Discriminative Feature Learning Approach for Deep Face
Recognition"), used with a classification loss (docs/method.md section 3, taxonomy Category 1).

    L_C = (1 / 2N) sum_i ||z_i - c_{y_i}||^2

averaged over the batch (the paper sums; the mean keeps the weight independent of batch size).
The class centers c_j [K, D] are **buffers, not parameters** (the trainer's optimizer only sees the
model): after each training-mode forward they move by Wen et al.'s update rule (their eq. 4),

    delta_c_j = sum_{i: y_i = j} (c_j - z_i) / (1 + n_j),     c_j <- c_j - alpha * delta_c_j

with n_j the number of class-j samples in the batch and alpha in (0, 1] (default 0.5). Centers
start at zero, as in the paper's algorithm. They are saved in the checkpoint (``loss`` entry).

K and D may be left out: the centers are then sized at the first forward (K from the
``num_classes`` argument, which the composite loss fills from the logits' width; D from z) and
take the stored size when a state dict is loaded, so ``build_loss(cfg)`` needs only the config.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from robustctl.losses.base import TrainingLoss
from robustctl.losses.composite import CompositeLoss, classification_term
from robustctl.losses.schema import OPTIONS, CenterLossConfig


class CenterLoss(nn.Module):
    """Args: ``num_classes`` (K), ``embedding_dim`` (D) (both optional, see above), ``alpha``
    (center update rate, default 0.5).

    ``forward(z [N, D], labels [N], num_classes=None) -> scalar``; in training mode it then
    updates the centers.
    """

    def __init__(
        self, num_classes: int | None = None, embedding_dim: int | None = None, alpha: float = 0.5
    ) -> None:
        super().__init__()
        if not 0 < alpha <= 1:
            raise ValueError(f"center update rate alpha must be in (0, 1], got {alpha}")
        self.alpha = alpha
        self.num_classes = num_classes
        shape = (num_classes, embedding_dim) if num_classes and embedding_dim else (0, 0)
        self.register_buffer("centers", torch.zeros(shape))

    def _materialize(self, z: Tensor, num_classes: int | None) -> None:
        k = num_classes or self.num_classes
        if k is None:
            raise ValueError(
                "CenterLoss needs num_classes (at construction or in forward) to size its centers"
            )
        self.centers = torch.zeros(k, z.shape[1], dtype=z.dtype, device=z.device)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        stored = state_dict.get(prefix + "centers")
        if stored is not None and self.centers.numel() == 0:
            self.centers = torch.zeros_like(stored, device=self.centers.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def loss(self, z: Tensor, labels: Tensor) -> Tensor:
        return 0.5 * (z - self.centers[labels]).pow(2).sum(dim=1).mean()

    def forward(self, z: Tensor, labels: Tensor, num_classes: int | None = None) -> Tensor:
        if self.centers.numel() == 0:
            self._materialize(z, num_classes)
        value = self.loss(z, labels)
        if self.training:
            self.update_centers(z.detach(), labels)
        return value

    @torch.no_grad()
    def update_centers(self, z: Tensor, labels: Tensor) -> None:
        """Wen et al.'s rule: each class's center moves toward its batch samples (absent classes
        stay)."""
        c = self.centers
        counts = torch.bincount(labels, minlength=len(c)).to(c.dtype)
        diff_sum = torch.zeros_like(c).index_add_(0, labels, c[labels] - z.to(c.dtype))
        self.centers.sub_(self.alpha * diff_sum / (1.0 + counts)[:, None])


def build_center(cfg: CenterLossConfig) -> TrainingLoss:
    """Classification + center loss (Wen et al. 2016)."""
    term = CenterLoss(alpha=cfg.center_alpha)
    return CompositeLoss(classification_term(cfg), {"center": (cfg.center_weight, term)})


OPTIONS.add(CenterLossConfig(name="center"), build_center)
