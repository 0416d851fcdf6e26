"""The convergence rule of the white-box stage (robustctl.threat_models.convergence): hand-computed
cases of "one doubling changed nothing", and the ladder on scripted attack outcomes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from robustctl.errors import ConfigError
from robustctl.evaluation.attack_runner import AttackOutcome
from robustctl.threat_models.convergence import (
    ConvergenceConfig,
    Level,
    converge,
    level_of,
    settled,
)


def level(success: float, median: float, n: int = 100) -> Level:
    return Level(1, 0, success, math.sqrt(success * (1 - success) / n), median, success, n)


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        # SE at 0.92 over 100 = 0.0271 >= 0.02 moved; median 0.100 -> 0.101 moved 1% < 2%
        ((0.90, 0.100), (0.92, 0.101), True),
        # the median moved 3%
        ((0.90, 0.100), (0.92, 0.097), False),
        # success moved 0.10 > SE 0.030 at 0.90
        ((0.80, 0.100), (0.90, 0.100), False),
        # fewer than half breached at both: the median stays infinite, success decides
        ((0.30, math.inf), (0.30, math.inf), True),
        # half breached for the first time: the median appeared
        ((0.48, math.inf), (0.50, 0.2), False),
        # everything breached at both (SE 0): success unchanged, median 1.5% lower
        ((1.0, 0.200), (1.0, 0.197), True),
        # the last of 60 breached: moved 1/60 = 0.0167, above both SEs (0.0165 at 59/60, 0 at
        # 60/60) but one example, the resolution
        ((59 / 60, 0.200, 60), (1.0, 0.199, 60), True),
        # two of 60 more: moved 0.033 > SE 0.023 at 58/60 and > 1/60
        ((58 / 60, 0.200, 60), (1.0, 0.199, 60), False),
        # three of 100 more, none missing before: moved 0.03 > SE at 0.97 (0.0171) and 1/100
        ((0.97, 0.200), (1.0, 0.199), False),
    ],
)
def test_settled_is_one_doubling_within_the_standard_error_and_two_percent(before, after, expected):
    done, what = settled(level(*before), level(*after), 0.02)
    assert done is expected
    assert "success" in what and "median" in what


def test_level_counts_the_breached_share_and_its_standard_error():
    distortions = np.array([0.1, 0.3, np.inf, 0.2, np.inf])
    got = level_of(2, 40, distortions, distortions)
    assert got.success == pytest.approx(0.6)
    assert got.standard_error == pytest.approx(math.sqrt(0.6 * 0.4 / 5))
    # breach median: the 3rd smallest of 5 (inf counts as not breached) is 0.3
    assert got.median == pytest.approx(0.3)


def outcome_at(distortions: list[float], x: torch.Tensor) -> AttackOutcome:
    """A scripted outcome: example i moved by distortions[i] (L2/sqrt(n)) and misclassified, or
    left clean where the distortion is inf."""
    n = len(distortions)
    labels = torch.zeros(n, dtype=torch.long)
    d = torch.tensor(distortions)
    breached = torch.isfinite(d)
    shift = torch.where(breached, d, torch.zeros_like(d)).view(-1, 1, 1, 1)
    x_adv = x + shift  # every pixel moved by d: L2 / sqrt(n) = d
    adv_pred = breached.long()
    return AttackOutcome(
        "scripted", x_adv, breached, adv_pred, labels.clone(), labels, None, {}, 1.0
    )


def test_the_ladder_keeps_each_examples_best_and_stops_when_a_doubling_changes_nothing():
    x = torch.zeros(4, 1, 2, 2)
    script = {
        1: [0.40, 0.30, math.inf, math.inf],  # success 0.5
        2: [0.20, 0.35, 0.30, math.inf],  # success 0.75; example 1 got worse: kept at 0.30
        4: [0.21, 0.30, 0.30, math.inf],  # nothing better: the combination is unchanged
    }
    seen = []

    def run_level(budget, incumbents):
        seen.append((budget, None if incumbents is None else incumbents.clone()))
        return outcome_at(script[budget], x), 10 * budget

    ladder = converge(run_level, x, ConvergenceConfig(max_doublings=5), "whitebox")
    assert [b for b, _ in seen] == [1, 2, 4]
    assert seen[0][1] is None
    # budget 2 restarts from budget 1's adversarial examples (the image itself where none)
    assert torch.allclose(seen[1][1].flatten(1)[:, 0], torch.tensor([0.40, 0.30, 0.0, 0.0]))
    assert ladder.converged and ladder.budget == 4
    assert [lv.passes for lv in ladder.levels] == [10, 30, 70]
    assert [lv.success for lv in ladder.levels] == [0.5, 0.75, 0.75]
    assert np.allclose(ladder.distortions, [0.20, 0.30, 0.30, np.inf])
    assert [lv.own_success for lv in ladder.levels] == [0.5, 0.75, 0.75]


def test_the_ladder_stops_unconverged_at_its_cap_and_says_so():
    x = torch.zeros(4, 1, 2, 2)

    def run_level(budget, incumbents):
        return outcome_at([0.4 / budget] * 4, x), budget  # halves every time: never settles

    ladder = converge(run_level, x, ConvergenceConfig(max_doublings=2), "whitebox")
    assert not ladder.converged and len(ladder.levels) == 3
    assert "not converged after 2 doubling(s)" in ladder.reason
    off = converge(run_level, x, ConvergenceConfig(max_doublings=0), "whitebox")
    assert not off.converged and "not measured" in off.reason and len(off.levels) == 1


def test_an_attacks_own_cap_overrides_the_shared_one():
    """``attack_max_doublings`` raises one attack's cap (the stage passes ``cap(attack)``) and
    leaves the others at ``max_doublings``; caps outside [0, 8] are refused."""
    x = torch.zeros(4, 1, 2, 2)

    def run_level(budget, incumbents):
        return outcome_at([0.4 / budget] * 4, x), budget  # never settles: climbs to its cap

    config = ConvergenceConfig(max_doublings=1, attack_max_doublings={"fmn_wb": 3})
    assert (config.cap("fmn_wb"), config.cap("cw_wb")) == (3, 1)
    fmn = converge(run_level, x, config, "whitebox", max_doublings=config.cap("fmn_wb"))
    cw = converge(run_level, x, config, "whitebox", max_doublings=config.cap("cw_wb"))
    assert [lv.budget for lv in fmn.levels] == [1, 2, 4, 8]
    assert [lv.budget for lv in cw.levels] == [1, 2]
    assert "not converged after 3 doubling(s)" in fmn.reason
    with pytest.raises(ConfigError, match="attack_max_doublings.fmn_wb"):
        ConvergenceConfig(attack_max_doublings={"fmn_wb": 9})
