"""A composite training loss: a classification term plus weighted embedding-geometry terms.

    L = w_cls * cls  +  w_siamese * SL  +  w_rvl * RVL  +  w_center * L_center

where each term is in its own module (:mod:`~robustctl.losses.cross_entropy`,
:mod:`~robustctl.losses.reverse_cross_entropy`, :mod:`~robustctl.losses.siamese`,
:mod:`~robustctl.losses.reduce_variance`, :mod:`~robustctl.losses.center`,
:mod:`~robustctl.losses.contrastive_center`) and a term with weight 0 is left out. The options:

- ``siamese_rvl`` = CE + Siamese + RVL, ``pdm`` = RCE + Siamese + RVL (PDM Algorithm 1:
  L = cls(p1) + cls(p2) + RVL + SL). With a Siamese term the loss ``needs_pairs``: the trainer
  forwards each sample's partner too; the classification term is then the sum over both halves
  (as in Algorithm 1), and RVL / center terms see the embeddings of both halves (2N samples).
- ``center``, ``contrastive_center`` = classification + that term.

``terms`` holds each weighted term under its name (``ce``/``rce``, ``siamese``, ``rvl``,
``center``, ``contrastive_center``); they sum to ``total``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from robustctl.losses.base import ClassificationLoss, LossOutput, Pairs, TrainingLoss
from robustctl.losses.cross_entropy import CrossEntropy
from robustctl.losses.reduce_variance import ReduceVarianceLoss
from robustctl.losses.reverse_cross_entropy import ReverseCrossEntropy
from robustctl.losses.schema import OPTIONS, LossConfig, PDMLossConfig
from robustctl.losses.siamese import siamese_cosine_loss
from robustctl.models.base import ModelOutput


class CompositeLoss(TrainingLoss):
    """Args: ``classification`` (a :class:`ClassificationLoss`, carries its own weight and
    ``logit_sign``), ``embedding_terms`` (name -> (weight, module with
    ``forward(z, labels, num_classes)``; K is the logits' width)),
    ``siamese_weight`` (0 = no Siamese term, no pairs), ``q`` (same-class partner probability)."""

    def __init__(
        self,
        classification: ClassificationLoss,
        embedding_terms: dict[str, tuple[float, nn.Module]] | None = None,
        siamese_weight: float = 0.0,
        q: float = 0.5,
    ) -> None:
        super().__init__()
        self.classification = classification
        self.logit_sign = classification.logit_sign
        active = {name: wt for name, wt in (embedding_terms or {}).items() if wt[0] > 0}
        self.weights = {name: float(weight) for name, (weight, _) in active.items()}
        self.embedding_terms = nn.ModuleDict({name: module for name, (_, module) in active.items()})
        self.siamese_weight = float(siamese_weight)
        self.needs_pairs = self.siamese_weight > 0
        self.same_class_probability = q

    def sample_losses(self, output: ModelOutput, labels: Tensor) -> Tensor:
        return self.classification.sample_losses(output, labels)

    def forward(
        self, output: ModelOutput, labels: Tensor, pairs: Pairs | None = None
    ) -> LossOutput:
        if self.needs_pairs and pairs is None:
            raise ValueError(
                "this loss has a Siamese term and needs pairs=Pairs(...) "
                "(see robustctl.losses.pairs)"
            )
        terms = dict(self.classification(output, labels, pairs).terms)
        z, y = output.embedding, labels
        if pairs is not None:
            if self.siamese_weight > 0:
                sl = siamese_cosine_loss(output.embedding, pairs.output.embedding, pairs.same)
                terms["siamese"] = self.siamese_weight * sl
            z, y = torch.cat([z, pairs.output.embedding]), torch.cat([y, pairs.labels])
        for name, term in self.embedding_terms.items():
            terms[name] = self.weights[name] * term(z, y, output.logits.shape[1])
        total = torch.stack(list(terms.values())).sum()
        return LossOutput(total, terms)


CLASSIFICATION: dict[str, type[ClassificationLoss]] = {
    "ce": CrossEntropy,
    "rce": ReverseCrossEntropy,
}


def classification_term(cfg: LossConfig) -> ClassificationLoss:
    """The classification term every loss option has (``classification``, ``weight``)."""
    return CLASSIFICATION[cfg.classification](weight=cfg.weight)


def build_pdm(cfg: PDMLossConfig) -> TrainingLoss:
    """Classification + Siamese cosine + reduce-variance loss (PDM section 3)."""
    rvl = ReduceVarianceLoss(cfg.rvl_normalization)
    return CompositeLoss(
        classification_term(cfg),
        {"rvl": (cfg.rvl_weight, rvl)},
        siamese_weight=cfg.siamese_weight,
        q=cfg.q,
    )


OPTIONS.add(PDMLossConfig(name="siamese_rvl"), build_pdm)  # CE + Siamese + RVL
OPTIONS.add(PDMLossConfig(name="pdm", classification="rce"), build_pdm)  # the paper's PDM
