"""95% intervals: Wilson against its textbook value, the AUC bootstrap against scikit-learn's AUC
on the same resamples, the breach median by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from robustctl.evaluation.intervals import (
    bootstrap_auc_interval,
    bootstrap_interval,
    breach_median,
    mann_whitney_auc,
    wilson_interval,
)


def test_wilson_interval_textbook_values():
    # 2 of 3: the Wilson 95% interval is [0.2077, 0.9385] (Newcombe 1998, Table I method 3 style)
    low, high = wilson_interval(2, 3)
    assert (low, high) == pytest.approx((0.2077, 0.9385), abs=5e-4)
    # 0 of 10: [0, 0.2775]; the interval never leaves [0, 1]
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=5e-4)
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0)
    # exactly, not up to round-off: a rate of 0 (1) never has an interval above 0 (below 1)
    assert wilson_interval(0, 7)[0] == 0.0 and wilson_interval(7, 7)[1] == 1.0
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(4, 3)


def test_mann_whitney_auc_equals_sklearn_with_ties():
    rng = np.random.default_rng(1)
    neg = rng.integers(0, 5, 40).astype(float)  # many ties
    pos = rng.integers(1, 7, 30).astype(float)
    expected = roc_auc_score(np.r_[np.zeros(40), np.ones(30)], np.r_[neg, pos])
    assert mann_whitney_auc(neg, pos) == pytest.approx(expected)


def draw_auc(clean, adv, draw):
    """A draw's AUC by a plain loop over its (adversarial, clean) positions, leaving out the
    comparisons between different copies of one original pair."""
    total = count = 0.0
    for a in range(len(draw)):
        for b in range(len(draw)):
            if a != b and draw[a] == draw[b]:
                continue
            x, c = adv[draw[a]], clean[draw[b]]
            total += 1.0 if x > c else 0.5 if x == c else 0.0
            count += 1
    return total / count


def test_auc_bootstrap_resamples_whole_pairs_like_a_plain_loop():
    rng = np.random.default_rng(2)
    clean = rng.normal(0, 1, 30)
    adv = clean + rng.normal(0.8, 1, 30)  # pair i's scores are correlated
    adv[:3] = clean[:3]  # ties within a pair count one half
    low, high = bootstrap_auc_interval(clean, adv, resamples=200, seed=5)
    draws = np.random.default_rng(5).integers(0, 30, size=(200, 30))
    aucs = [draw_auc(clean, adv, d) for d in draws]
    alpha = 1 - 0.95  # as the code computes it (not exactly 0.05: the order statistic moves)
    expected = np.quantile(aucs, [alpha / 2, 1 - alpha / 2], method="inverted_cdf")
    assert (low, high) == pytest.approx(tuple(expected), rel=1e-12)
    point = roc_auc_score(np.r_[np.zeros(30), np.ones(30)], np.r_[clean, adv])
    assert low < point < high
    assert bootstrap_auc_interval(clean, adv, seed=5) == bootstrap_auc_interval(clean, adv, seed=5)


def test_auc_interval_holds_the_auc_when_each_attack_lands_just_under_its_own_clean_score():
    """The adaptive attack's signature: every adversarial score a hair under its own clean score
    (AUC just under 0.5). Counting the copies of a pair against each other biased every draw low
    and left the AUC above its whole interval (seen on make detectors-digits)."""
    rng = np.random.default_rng(4)
    clean = rng.normal(0, 1, 60)
    adv = clean - 1e-3
    point = roc_auc_score(np.r_[np.zeros(60), np.ones(60)], np.r_[clean, adv])
    low, high = bootstrap_auc_interval(clean, adv, seed=0)
    assert low < point < high
    draws = np.random.default_rng(0).integers(0, 60, size=(1000, 60))
    uncorrected = [
        roc_auc_score(np.r_[np.zeros(60), np.ones(60)], np.r_[clean[d], adv[d]]) for d in draws
    ]
    assert np.quantile(uncorrected, 0.975) < point  # what the plain pair bootstrap gave


def test_mean_bootstrap_covers_the_mean_and_narrows_with_n():
    rng = np.random.default_rng(3)
    small, large = rng.normal(1, 1, 20), rng.normal(1, 1, 2000)
    lo_s, hi_s = bootstrap_interval(small)
    lo_l, hi_l = bootstrap_interval(large)
    assert lo_s < small.mean() < hi_s and lo_l < large.mean() < hi_l
    # width ~ 2 * 1.96 * sigma / sqrt(n)
    assert hi_l - lo_l == pytest.approx(2 * 1.96 / math.sqrt(2000), rel=0.15)
    assert hi_s - lo_s > 5 * (hi_l - lo_l)
    assert all(math.isnan(v) for v in bootstrap_interval(np.array([])))


def test_breach_median_by_hand():
    inf = math.inf
    # 4 examples, 2 breached at 0.1 and 0.2: half are breached from budget 0.2 on
    assert breach_median(np.array([0.2, inf, 0.1, inf])) == 0.2
    # 3 examples: 2 of 3 are needed (ceil(3/2)), reached at 0.3
    assert breach_median(np.array([0.3, inf, 0.1])) == 0.3
    # fewer than half breached: never
    assert breach_median(np.array([0.1, inf, inf])) == inf
