"""Is a detector's robustness plausible? (Tramer 2022, "Detecting adversarial examples is (nearly)
as hard as classifying them", ICML.)

Tramer's reduction: a detector that, at perturbation size eps, keeps a share A of the points
correct-or-rejected under every attack gives an (inefficient) classifier that is robust at eps / 2
on a share A of them. So a detection claim implies a robust-classification claim at half the
budget, and that claim can be set beside the best robust accuracy anyone has reached.

The claim read from a run: robust accuracy with rejection under the adaptive attack
(``robust/apgd-wb/robust_accuracy``, the ``robust`` stage with a detector, budget
``threat_model.robust.eps`` in ``threat_model.robust.norm``). The reference: the best known robust
accuracy for the dataset and norm at the largest budget eps' <= eps / 2 in :data:`REFERENCES`
(robust accuracy falls as the budget grows, so the best known at eps / 2 is at most the best
known at eps'). The check fails when even the lower end of the claim's 95% interval lies above
the reference: the detector would beat every robust classifier, so its evaluation is the likelier
to be wrong. Not checked without the numbers, or without a reference for the dataset and norm.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from robustctl import metric_keys as keys
from robustctl.evaluation.check_result import FAILED, NOT_CHECKED, PASSED, SanityCheck


@dataclass(frozen=True)
class Reference:
    """The best known robust accuracy for ``dataset`` at ``eps`` in ``norm``, and its source."""

    dataset: str
    norm: str
    eps: float
    robust_accuracy: float
    source: str


REFERENCES = (
    Reference(
        "cifar10",
        "linf",
        8 / 255,
        0.7371,
        "RobustBench CIFAR-10 Linf 8/255 leaderboard, best entry (trained with extra data), "
        "AutoAttack standard",
    ),
)
NAME = "detector_claim_plausible"
MEANING = "implausible detector claim"


def best_known(dataset: str, norm: str, eps: float) -> Reference | None:
    """The reference at the largest budget <= ``eps`` for ``dataset`` and ``norm``, or None."""
    known = [
        r for r in REFERENCES if r.dataset == dataset and r.norm == norm and r.eps <= eps + 1e-12
    ]
    return max(known, key=lambda r: r.eps) if known else None


def detector_claim_plausible(
    metrics: Mapping[str, float], dataset: str, norm: str, eps: float
) -> SanityCheck:
    """The check of the module docstring on one run's metrics."""
    key = keys.attack_key(keys.ROBUST, keys.APGD_WB, keys.ROBUST_ACCURACY)
    claim = metrics.get(key)
    if claim is None or claim != claim:
        return SanityCheck(
            NAME,
            NOT_CHECKED,
            "needs robust accuracy with rejection (the robust stage with a detector)",
            MEANING,
        )
    half = eps / 2
    reference = best_known(dataset, norm, half)
    if reference is None:
        return SanityCheck(
            NAME,
            NOT_CHECKED,
            f"no reference robust accuracy for {dataset} in {norm} at eps <= {half:.4g}",
            MEANING,
        )
    low = metrics.get(keys.ci_low(key), claim)
    if low > reference.robust_accuracy:
        return SanityCheck(
            NAME,
            FAILED,
            f"robust accuracy with rejection {claim:.3f} (95% CI from {low:.3f}) at {norm} eps "
            f"{eps:.4g} implies a classifier {claim:.3f} robust at eps {half:.4g}, above the "
            f"best known {reference.robust_accuracy:.3f} at eps {reference.eps:.4g} "
            f"({reference.source})",
            MEANING,
        )
    return SanityCheck(NAME, PASSED, meaning=MEANING)
