"""Siamese cosine loss (PDM section 3.1 and Algorithm 1).

Every sample x_i gets a partner x_j drawn from the training set (:class:`~robustctl.losses.pairs.
PairSampler`): from the same class with probability Q (target s = 1), else from another class
(s = 0). Both go through the same network; with z the embeddings,

    SL = mean_i | cos(z_i, z_j) - s_i |,   cos(a, b) = a.b / max(||a|| ||b||, eps)

Cosine similarity is scale-free, so SL separates classes by angle (the paper's bounded proxy for
the distance between clusters) without rewarding unbounded embedding norms.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def siamese_cosine_loss(z: Tensor, z_partner: Tensor, same: Tensor, eps: float = 1e-8) -> Tensor:
    """SL for embeddings [N, D], partner embeddings [N, D] and targets ``same`` [N] in {0, 1}."""
    cos = F.cosine_similarity(z, z_partner, dim=1, eps=eps)
    return (cos - same.to(cos.dtype)).abs().mean()


class SiameseCosineLoss(nn.Module):
    """Module form of :func:`siamese_cosine_loss` (no state)."""

    def forward(self, z: Tensor, z_partner: Tensor, same: Tensor) -> Tensor:
        return siamese_cosine_loss(z, z_partner, same)
