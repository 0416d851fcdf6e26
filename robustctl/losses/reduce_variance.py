"""Reduce-variance loss, RVL (PDM section 3.2, equation 5).

For each class c present in the batch, with mu_c the batch mean of its N_c embeddings,

    sigma_c = (1/N_c) sum_{i: y_i = c} ||z_i - mu_c||^2,
    RVL = mean over present classes of sigma_c

Known pitfall (docs/method.md section 3.4): RVL is not scale-invariant, so shrinking every
embedding toward zero also minimizes it, and a literal implementation with weight 1 can collapse
the embeddings.
``normalization`` picks the variant:

- ``raw``: the paper's RVL, as above.
- ``centroid``: RVL / D with D the mean squared distance between the centroids of the present
  classes (over ordered pairs c != c'): the paper's "variance vs. distance" margin objective as a
  scale-invariant ratio. Gradients flow through D too, so it also pushes centroids apart. With
  fewer than two classes in the batch D is undefined and the term is 0.
- ``unit``: RVL of the L2-normalized embeddings z / ||z|| (scale-invariant, bounded by 4).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NORMALIZATIONS = ("raw", "centroid", "unit")


def class_statistics(
    z: Tensor, labels: Tensor, num_classes: int | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-class ``(counts [K], centroids [K, D], variances [K])`` of a batch; absent classes get 0.

    Vectorised with ``index_add`` (no loop over classes, no host sync when ``num_classes`` is
    given).
    """
    k = int(labels.max()) + 1 if num_classes is None else num_classes
    counts = torch.bincount(labels, minlength=k).to(z.dtype)
    safe = counts.clamp_min(1.0)
    centroids = (
        torch.zeros(k, z.shape[1], dtype=z.dtype, device=z.device).index_add(0, labels, z)
        / safe[:, None]
    )
    sq_dist = (z - centroids[labels]).pow(2).sum(dim=1)
    variances = torch.zeros(k, dtype=z.dtype, device=z.device).index_add(0, labels, sq_dist) / safe
    return counts, centroids, variances


def reduce_variance_loss(
    z: Tensor,
    labels: Tensor,
    normalization: str = "raw",
    num_classes: int | None = None,
    eps: float = 1e-12,
) -> Tensor:
    """RVL of embeddings [N, D] with labels [N] (see the module docstring for ``normalization``)."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(
            f"RVL normalization must be one of {', '.join(NORMALIZATIONS)}, got {normalization!r}"
        )
    if normalization == "unit":
        z = F.normalize(z, dim=1, eps=eps)
    counts, centroids, variances = class_statistics(z, labels, num_classes)
    present = (counts > 0).to(z.dtype)
    rvl = (variances * present).sum() / present.sum()
    if normalization != "centroid":
        return rvl
    pair_weight = (
        present[:, None]
        * present[None, :]
        * (1.0 - torch.eye(len(present), dtype=z.dtype, device=z.device))
    )
    centroid_sq = (centroids[:, None, :] - centroids[None, :, :]).pow(2).sum(dim=2)
    n_pairs = pair_weight.sum()
    distance = (centroid_sq * pair_weight).sum() / n_pairs.clamp_min(1.0)
    return torch.where(n_pairs > 0, rvl / distance.clamp_min(eps), torch.zeros_like(rvl))


class ReduceVarianceLoss(nn.Module):
    """Module form of :func:`reduce_variance_loss`. Args: ``normalization`` (raw | centroid | unit,
    default raw), ``num_classes`` (K, optional: avoids a host sync per call)."""

    def __init__(self, normalization: str = "raw", num_classes: int | None = None) -> None:
        super().__init__()
        if normalization not in NORMALIZATIONS:
            raise ValueError(
                f"RVL normalization must be one of {', '.join(NORMALIZATIONS)}, "
                f"got {normalization!r}"
            )
        self.normalization = normalization
        self.num_classes = num_classes

    def forward(self, z: Tensor, labels: Tensor, num_classes: int | None = None) -> Tensor:
        return reduce_variance_loss(z, labels, self.normalization, num_classes or self.num_classes)
