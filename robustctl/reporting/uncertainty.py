"""The number a cell shows and its uncertainty, from one run or from several seeds.

- One run: the logged value ``K`` with the 95% interval the run logged as ``K_ci_low`` /
  ``K_ci_high`` (AUC by bootstrap over pairs, rates by Wilson, distortions by bootstrap of the
  mean; see docs/metrics.md), and for an AUC its pair count ``<stage>/<attack>/pairs``. Runs logged
  before intervals existed give the value alone.
- Several seeds (:func:`seeds_estimate`): the mean across seeds, the sample standard deviation
  across seeds ``sd = sqrt(sum (x_i - mean)^2 / (n - 1))`` and ``n``; for an AUC the smallest pair
  count among the seeds. A NaN in any seed (a median breach distortion beyond the budget) makes
  the mean NaN.
- Ratios paired by seed (:func:`ratio_estimate`): the mean of the per-seed ratios with the 95%
  t-interval ``mean ± t_{0.975, n-1} * sd / sqrt(n)``; one pair gives the ratio alone.

No torch; scipy is imported only for the t quantile.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from robustctl import metric_keys as keys
from robustctl.reporting.collect import RunRecord
from robustctl.reporting.groups import seed_order

__all__ = [
    "Estimate",
    "paired_ratios",
    "ratio_estimate",
    "run_estimate",
    "seeds_estimate",
    "t_interval",
]


@dataclass(frozen=True)
class Estimate:
    """A value with what is known of its uncertainty (None: not known or not applicable)."""

    value: float
    ci_low: float | None = None
    ci_high: float | None = None
    sd: float | None = None
    n_seeds: int = 1
    pairs: int | None = None


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _pairs(run: RunRecord, pairs_key: str | None) -> int | None:
    value = run.metrics.get(pairs_key) if pairs_key else None
    return None if value is None or math.isnan(value) else int(round(value))


def run_estimate(run: RunRecord, key: str, pairs_key: str | None = None) -> Estimate:
    """One run's ``key``, its logged 95% interval (if any) and pair count (if ``pairs_key``)."""
    value = run.metrics[key]
    low, high = run.metrics.get(keys.ci_low(key)), run.metrics.get(keys.ci_high(key))
    if _finite(value) is None or low is None or high is None:
        low = high = None  # a NaN bound is kept: e.g. a median breach beyond the budget
    return Estimate(value, low, high, pairs=_pairs(run, pairs_key))


def seeds_estimate(
    runs: Sequence[RunRecord], key: str, pairs_key: str | None = None
) -> Estimate | None:
    """The runs (one per seed) that logged ``key``: one gives :func:`run_estimate`; several give
    mean, sample sd and count, and the smallest pair count. None when no run logged ``key``."""
    having = [r for r in runs if key in r.metrics]
    if not having:
        return None
    if len(having) == 1:
        return run_estimate(having[0], key, pairs_key)
    values = [r.metrics[key] for r in having]
    pairs = [p for r in having if (p := _pairs(r, pairs_key)) is not None]
    if any(math.isnan(v) for v in values):  # the mean of an undefined value is undefined
        return Estimate(math.nan, n_seeds=len(values), pairs=min(pairs) if pairs else None)
    return Estimate(
        statistics.fmean(values),
        sd=statistics.stdev(values),
        n_seeds=len(values),
        pairs=min(pairs) if pairs else None,
    )


def t_interval(values: Sequence[float], level: float = keys.CI_LEVEL) -> tuple[float, float, float]:
    """``(mean, low, high)``: the two-sided ``level`` t-interval of the mean of ``values``
    (``n >= 2``): ``mean ± t_{(1+level)/2, n-1} * sd / sqrt(n)``."""
    from scipy.stats import t

    n = len(values)
    if n < 2:
        raise ValueError(f"a t-interval needs at least 2 values, got {n}")
    mean = statistics.fmean(values)
    half = float(t.ppf((1 + level) / 2, n - 1)) * statistics.stdev(values) / math.sqrt(n)
    return mean, mean - half, mean + half


def paired_ratios(
    numerator: Mapping[str, float], denominator: Mapping[str, float]
) -> list[tuple[str, float]]:
    """``numerator[s] / denominator[s]`` for every seed ``s`` both have, in seed order; pairs with
    a missing, non-finite or zero value are left out."""
    out = []
    for seed in sorted(set(numerator) & set(denominator), key=seed_order):
        num, den = _finite(numerator[seed]), _finite(denominator[seed])
        if num is not None and den:
            out.append((seed, num / den))
    return out


def ratio_estimate(ratios: Sequence[float]) -> Estimate | None:
    """Mean of per-seed ratios with its 95% t-interval (``n_seeds`` = pairs); one ratio alone
    without an interval; None for none."""
    if not ratios:
        return None
    if len(ratios) == 1:
        return Estimate(ratios[0])
    mean, low, high = t_interval(ratios)
    return Estimate(mean, low, high, n_seeds=len(ratios))
