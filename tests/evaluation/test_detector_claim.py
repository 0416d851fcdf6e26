"""The detector-claim plausibility check (Tramer 2022): a detection claim at eps implies a robust
classifier at eps / 2; it fails when that beats the best known robust accuracy there, passes
below it, and says why when it cannot check."""

from __future__ import annotations

import pytest

from robustctl import metric_keys as keys
from robustctl.composition import compose
from robustctl.evaluation.check_result import FAILED, NOT_CHECKED, PASSED
from robustctl.evaluation.detector_claim import best_known, detector_claim_plausible
from robustctl.evaluation.sanity import sanity_stage

CLAIM = keys.attack_key(keys.ROBUST, keys.APGD_WB, keys.ROBUST_ACCURACY)


def claim(value: float, low: float) -> dict[str, float]:
    return {CLAIM: value, keys.ci_low(CLAIM): low, keys.ci_high(CLAIM): min(value + 0.05, 1)}


def test_a_claim_above_the_best_known_robust_accuracy_at_half_the_budget_fails():
    check = detector_claim_plausible(claim(0.90, 0.85), "cifar10", "linf", 16 / 255)
    assert check.status == FAILED
    assert "implies a classifier 0.900 robust at eps 0.03137" in check.detail
    assert "best known 0.737 at eps 0.03137" in check.detail


def test_a_claim_whose_interval_reaches_the_reference_passes():
    # 0.74 > 0.7371, but its interval starts below: no evidence against it
    assert detector_claim_plausible(claim(0.74, 0.70), "cifar10", "linf", 16 / 255).status == (
        PASSED
    )
    assert detector_claim_plausible(claim(0.50, 0.45), "cifar10", "linf", 20 / 255).status == (
        PASSED
    )


@pytest.mark.parametrize(
    ("metrics", "dataset", "norm", "eps", "why"),
    [
        ({}, "cifar10", "linf", 16 / 255, "needs robust accuracy with rejection"),
        (claim(0.9, 0.85), "cifar10", "linf", 8 / 255, "no reference robust accuracy"),
        (claim(0.9, 0.85), "cifar10", "l2", 1.0, "no reference robust accuracy"),
        (claim(0.9, 0.85), "digits", "linf", 0.3, "for digits in linf at eps <= 0.15"),
    ],
)
def test_without_a_claim_or_a_reference_it_says_why(metrics, dataset, norm, eps, why):
    check = detector_claim_plausible(metrics, dataset, norm, eps)
    assert check.status == NOT_CHECKED and why in check.detail


def test_the_reference_is_the_largest_budget_within_half_the_claim():
    assert best_known("cifar10", "linf", 10 / 255).eps == pytest.approx(8 / 255)
    assert best_known("cifar10", "linf", 7 / 255) is None


def test_the_sanity_stage_runs_it_with_the_runs_budget_and_says_what_a_failure_means():
    _, cfg = compose(
        ["dataset=cifar10", "threat_model=robust", f"threat_model.robust.eps={16 / 255}"]
    )
    result = sanity_stage(claim(0.95, 0.9), cfg)
    tag = keys.sanity_tag("detector_claim_plausible")
    assert result.tags[tag].startswith("failed: robust accuracy with rejection 0.950")
    assert result.notes[tag].startswith("implausible detector claim: ")
    assert tag not in sanity_stage(claim(0.95, 0.9)).tags  # no config: not run
