"""95% intervals for the numbers a run logs (``<key>_ci_low`` / ``<key>_ci_high``).

- Rates (success rate, target rate, transfer rate): the Wilson score interval of k successes in n
  trials, with z the normal quantile of the level (1.96 for 95%)::

      centre = (k/n + z^2/(2n)) / (1 + z^2/n)
      half   = z / (1 + z^2/n) * sqrt(k/n (1 - k/n) / n + z^2 / (4 n^2))

  It stays inside [0, 1] and is sensible at k = 0 or k = n, where the normal approximation is not.
- Means and medians over examples (distortions): the percentile bootstrap, ``resamples`` draws of
  the examples with replacement from a seeded generator; the interval is the (alpha/2, 1-alpha/2)
  quantiles of the statistic over the draws.
- Detection AUC: the same percentile bootstrap over the (clean, adversarial) *pairs*: a draw keeps
  each chosen pair's clean and adversarial score together. The AUC of n pairs is the Mann-Whitney
  statistic (ties count one half; equal to ``sklearn.metrics.roc_auc_score``), the mean of
  h(a_i, c_j) = 1[a_i > c_j] + 1/2 1[a_i = c_j] over all n^2 (adversarial i, clean j), of which n
  compare a pair with itself. A draw that holds pair i m_i times would compare the copies of pair
  i with each other m_i^2 times instead of m_i (about 2n - 1 such terms in all instead of n), and
  where the two scores of a pair are tied up (an adaptive attack brings every adversarial score
  just under its own clean score: h(a_i, c_i) = 0 for all i) that biases every draw: measured on
  ``make detectors-digits``, the AUC sat above its whole interval (0.475 [0.458, 0.474]). So a
  draw's AUC leaves out the m_i (m_i - 1) comparisons between *different copies* of the same
  pair, the estimator's own structure (each copy compared with itself once):

      AUC* = (n^2 MW* - sum_i m_i (m_i - 1) h(a_i, c_i)) / (n^2 - sum_i m_i (m_i - 1)).

Every function is seeded and returns plain floats (NaN when there is nothing to resample).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy.stats import norm, rankdata

LEVEL = 0.95
RESAMPLES = 1000


def _z(level: float) -> float:
    return float(norm.ppf(0.5 + level / 2))


def wilson_interval(successes: int, trials: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion; (nan, nan) for zero trials."""
    if trials <= 0:
        return math.nan, math.nan
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must be in [0, {trials}], got {successes}")
    z, n = _z(level), trials
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # at k = 0 (k = n) the lower (upper) end is exactly 0 (1); round-off would leave 1e-17
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return low, high


def _percentiles(draws: np.ndarray, level: float) -> tuple[float, float]:
    """The (alpha/2, 1 - alpha/2) quantiles of the draws, without interpolation (so infinite
    draws give infinite bounds, never NaN)."""
    alpha = 1 - level
    if draws.size == 0 or np.isnan(draws).all():
        return math.nan, math.nan
    low, high = np.quantile(draws, [alpha / 2, 1 - alpha / 2], method="inverted_cdf")
    return float(low), float(high)


def bootstrap_interval(
    values: np.ndarray,
    statistic: Callable[[np.ndarray], np.ndarray] = lambda v: v.mean(axis=-1),
    *,
    level: float = LEVEL,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over ``values`` (1-D).

    ``statistic`` maps a [resamples, n] array of draws to [resamples] (default: the mean). An
    infinite statistic (e.g. a median over examples never breached) stays infinite in the bounds.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, values.size, size=(resamples, values.size))
    return _percentiles(np.asarray(statistic(values[idx]), dtype=np.float64), level)


def breach_median(distortions: np.ndarray) -> np.ndarray:
    """The budget at which half the examples are breached, along the last axis: the smallest d
    with #{i : d_i <= d} >= n/2 (``inf`` marks an example never breached, so fewer than half
    breached gives inf)."""
    return np.quantile(np.asarray(distortions, np.float64), 0.5, axis=-1, method="inverted_cdf")


def mann_whitney_auc(negatives: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """ROC-AUC of positives over negatives by ranks, along the last axis (batched):
    (sum of the positives' mid-ranks - m(m+1)/2) / (m * n)."""
    neg, pos = np.asarray(negatives, np.float64), np.asarray(positives, np.float64)
    m, n = pos.shape[-1], neg.shape[-1]
    ranks = rankdata(np.concatenate([pos, neg], axis=-1), axis=-1)
    return (ranks[..., :m].sum(-1) - m * (m + 1) / 2) / (m * n)


def bootstrap_auc_interval(
    clean_scores: np.ndarray,
    adv_scores: np.ndarray,
    *,
    level: float = LEVEL,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the detection AUC over (clean, adversarial) pairs: pair i
    is ``(clean_scores[i], adv_scores[i])``, a draw resamples whole pairs, and its AUC leaves out
    the comparisons between different copies of one pair (module docstring)."""
    neg = np.asarray(clean_scores, np.float64).ravel()
    pos = np.asarray(adv_scores, np.float64).ravel()
    if neg.shape != pos.shape:
        raise ValueError(f"{neg.size} clean scores but {pos.size} adversarial scores")
    if neg.size == 0:
        return math.nan, math.nan
    n = neg.size
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(resamples, n))
    auc = mann_whitney_auc(neg[idx], pos[idx])
    self_terms = (pos > neg) + 0.5 * (pos == neg)  # h(a_i, c_i)
    counts = np.zeros((resamples, n))
    np.add.at(counts, (np.arange(resamples)[:, None], idx), 1.0)
    extra = counts * (counts - 1)  # comparisons between different copies of pair i
    total = float(n * n)
    corrected = (total * auc - extra @ self_terms) / (total - extra.sum(1))
    return _percentiles(corrected, level)
