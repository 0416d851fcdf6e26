"""Config dataclasses of the ``loss`` group and its registry, :data:`OPTIONS` (each loss module adds
its options with their builders; ``robustctl.losses`` imports them all). Pure Python.

Every option has a classification term (``classification``: ce or rce, weighted by ``weight``);
the composite options add embedding-geometry terms, each with its own weight (0 switches a term
off). docs/method.md section 3 gives the formulas; ``robustctl.losses`` implements them.
"""

from __future__ import annotations

from dataclasses import dataclass

from robustctl.config.registry import OptionRegistry
from robustctl.config.validation import in_unit_interval
from robustctl.config.validation import require as _require

CLASSIFICATIONS = ("ce", "rce")
RVL_NORMALIZATIONS = ("raw", "centroid", "unit")

# Options whose name fixes the classification term (the paper's table columns).
IMPLIED_CLASSIFICATION = {"ce": "ce", "rce": "rce", "siamese_rvl": "ce", "pdm": "rce"}


def _non_negative(value: float, key: str) -> None:
    _require(value >= 0, key, f"must be >= 0 (0 switches the term off), got {value}")


@dataclass
class LossConfig:
    """Training objective: the classification term alone (options ``ce`` and ``rce``)."""

    name: str = "ce"
    classification: str = "ce"
    weight: float = 1.0

    def __post_init__(self) -> None:
        _require(
            self.classification in CLASSIFICATIONS,
            "loss.classification",
            f"must be ce or rce, got {self.classification!r}",
        )
        implied = IMPLIED_CLASSIFICATION.get(self.name)
        _require(
            implied is None or self.classification == implied,
            "loss.classification",
            f"option {self.name!r} uses {implied}, got {self.classification!r} "
            "(pdm = rce + siamese + rvl, siamese_rvl = ce + siamese + rvl)",
        )
        _require(self.weight > 0, "loss.weight", f"must be > 0, got {self.weight}")


@dataclass
class PDMLossConfig(LossConfig):
    """Classification + Siamese cosine loss + reduce-variance loss (``siamese_rvl``, ``pdm``).

    ``q``: probability that a sample's Siamese partner is drawn from its own class.
    ``rvl_normalization``: ``centroid`` (default; RVL divided by the mean squared distance between
    class centroids: the variance-vs-distance objective of PDM section 3 as a ratio,
    scale-invariant), ``raw`` (the paper's literal RVL; with RCE and weight 1 it collapsed every
    embedding to one point on digits) or ``unit`` (RVL on L2-normalized embeddings).
    """

    siamese_weight: float = 1.0
    q: float = 0.5
    rvl_weight: float = 1.0
    rvl_normalization: str = "centroid"

    def __post_init__(self) -> None:
        super().__post_init__()
        _non_negative(self.siamese_weight, "loss.siamese_weight")
        _non_negative(self.rvl_weight, "loss.rvl_weight")
        in_unit_interval(self.q, "loss.q")
        _require(
            self.rvl_normalization in RVL_NORMALIZATIONS,
            "loss.rvl_normalization",
            f"must be one of {', '.join(RVL_NORMALIZATIONS)}; got {self.rvl_normalization!r}",
        )


@dataclass
class CenterLossConfig(LossConfig):
    """Classification + center loss (Wen et al. 2016).

    ``center_alpha``: rate of the centers' update rule (centers are buffers, not parameters).
    """

    center_weight: float = 0.1
    center_alpha: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        _non_negative(self.center_weight, "loss.center_weight")
        in_unit_interval(self.center_alpha, "loss.center_alpha", open_left=True)


@dataclass
class ContrastiveCenterLossConfig(CenterLossConfig):
    """Classification + contrastive-center loss (Qi & Su 2017); ``delta`` keeps the ratio finite."""

    delta: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.delta > 0, "loss.delta", f"must be > 0, got {self.delta}")


# option -> (its config, its builder ``config -> TrainingLoss``); the paper's columns first
OPTIONS: OptionRegistry = OptionRegistry("loss")

# The paper's settings where an option's default departs from them (PDM section 3 uses the raw
# RVL); a run with other values is a variant of the paper's loss and says so in the report.
PAPER_SETTINGS: dict[str, dict[str, object]] = {
    "siamese_rvl": {"rvl_normalization": "raw"},
    "pdm": {"rvl_normalization": "raw"},
}


def loss_variant(loss: LossConfig | dict) -> str:
    """The loss options that depart from the paper's, as ``key=value`` joined by ", " ("" when
    none do; options outside the paper compare with their defaults)."""
    values = loss if isinstance(loss, dict) else vars(loss)
    name = values.get("name", "")
    if name not in OPTIONS:
        return ""
    option = OPTIONS.configs()[name]
    paper = {**vars(option), **PAPER_SETTINGS.get(name, {})}
    return ", ".join(
        f"{key}={values[key]}"
        for key in paper
        if key != "name" and key in values and values[key] != paper[key]
    )
