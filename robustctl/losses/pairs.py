"""Siamese partners for PDM training (Algorithm 1): one partner per batch sample, from the whole
training set, vectorised.

For a sample i of class c (N_c training samples of class c, N in total):

- with probability Q the partner is drawn uniformly from the *other* N_c - 1 samples of class c
  (target s = 1); a class with a single sample has no such partner and falls back to the next case;
- otherwise (target s = 0) as PDM Algorithm 1 draws it: a class d uniformly from the K - 1 other
  classes present, then a sample uniformly from class d. Every other class is equally likely
  whatever its size (a uniform draw over the N - N_c other samples would favour large classes).

A sample is never its own partner. The sampler sorts the training indices by class once; a draw
then costs three uniform numbers per sample and index arithmetic that skips the sample itself
(same class) or its own class (other classes). All randomness comes from the ``generator`` passed to
:meth:`PairSampler.sample`; the trainer passes its shuffle generator, which the checkpoint saves,
so a resumed run draws the same partners as an uninterrupted one. :meth:`PairSampler.to` moves the
index tables to the training device, where a draw runs without a host sync.
"""

from __future__ import annotations

import torch
from torch import Tensor

from robustctl.models.base import ModelOutput


class PairSampler:
    """Built once from the training labels [N]; ``sample(idx)`` gives partners for batch indices."""

    def __init__(self, labels: Tensor, q: float = 0.5) -> None:
        if not 0 <= q <= 1:
            raise ValueError(f"same-class probability q must be in [0, 1], got {q}")
        labels = labels.detach().cpu().long()
        if labels.ndim != 1 or len(labels) < 2:
            raise ValueError(
                "PairSampler needs a 1-D tensor of at least 2 labels, "
                f"got shape {tuple(labels.shape)}"
            )
        self.q = q
        self.labels = labels
        self.n = len(labels)
        self.counts = torch.bincount(labels)  # [K] N_c
        if int((self.counts > 0).sum()) < 2:
            raise ValueError("PairSampler needs at least two classes in the training labels")
        self.offsets = (
            torch.cumsum(self.counts, 0) - self.counts
        )  # [K] start of class c in ``order``
        self.order = torch.argsort(labels, stable=True)  # training indices grouped by class
        self.present = torch.nonzero(self.counts > 0).flatten()  # [K'] classes with samples
        self.slot = torch.full_like(self.counts, -1)  # class -> its position in ``present``
        self.slot[self.present] = torch.arange(len(self.present))
        self.rank = torch.empty_like(labels)  # position of each sample in its block
        self.rank[self.order] = torch.arange(self.n) - self.offsets[labels[self.order]]

    def to(self, device: torch.device | str) -> PairSampler:
        """Move the index tables to ``device`` (where :meth:`sample` then draws); returns self."""
        for name in ("labels", "counts", "offsets", "order", "present", "slot", "rank"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def sample(
        self, idx: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Partners for the training indices ``idx`` [B]: ``(partner_idx [B] int64, same [B]
        float)``, on the sampler's device (``generator`` must live there too)."""
        idx = idx.to(self.labels.device, torch.long)
        y = self.labels[idx]
        n_c, start = self.counts[y], self.offsets[y]
        u = torch.rand(
            3, len(idx), generator=generator, dtype=torch.float64, device=self.labels.device
        )
        same = (u[0] < self.q) & (n_c > 1)
        # same class: r uniform in [0, N_c - 2], shifted past the sample itself
        span = (n_c - 1).clamp_min(1)
        r_same = torch.minimum((u[1] * span).long(), span - 1)
        r_same = r_same + (r_same >= self.rank[idx]).long()
        # other class: slot j uniform in [0, K' - 2], shifted past c's slot; then a uniform sample
        k_other = len(self.present) - 1
        j = (u[2] * k_other).long().clamp(max=k_other - 1)
        d = self.present[j + (j >= self.slot[y]).long()]
        r_other = torch.minimum((u[1] * self.counts[d]).long(), self.counts[d] - 1)
        position = torch.where(same, start + r_same, self.offsets[d] + r_other)
        return self.order[position], same.float()


def split_output(output: ModelOutput, n: int) -> tuple[ModelOutput, ModelOutput]:
    """Split the output of one forward pass over ``cat([x, x_partner])`` into its two halves."""
    return (
        ModelOutput(output.logits[:n], output.embedding[:n]),
        ModelOutput(output.logits[n:], output.embedding[n:]),
    )
