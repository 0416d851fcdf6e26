"""Convergence of a white-box number, measured rather than assumed (docs/method.md section 8.6).

A white-box attack's success rate and median breach distortion describe the *model* only once
more attack changes neither. :func:`converge` runs an attack on a ladder of budgets: level 0 at
the configured budget, level j at 2^j times its iterations (``budget`` = the factor), each level a
run restarted from each example's incumbent (its best adversarial example so far; the
configured start where it has none) and combined with every earlier level's (each example keeps
its smallest breach distortion over all runs so far: the earlier runs are work the attacker
already paid for, so the cumulative attack work roughly doubles from one level to the next).
After every level j >= 1 it compares level j with level j - 1, over the n clean-correct examples:

    |s_j - s_{j-1}| <= max(SE_{j-1}, SE_j, 1 / n),  SE = sqrt(s (1 - s) / n)  (within its error)
    |m_j - m_{j-1}| <  tolerance * m_{j-1}                   (median breach distortion, 2% default)

(two infinite medians, fewer than half breached at both levels, count as unchanged; one infinite
and one finite as changed). The larger of the two levels' standard errors, and never less than
one example (the success rate's resolution), because SE_j alone is 0 at s_j = 1 and under 1/n
just below it: the last of 60 examples breached by a doubling (0.983 -> 1.000, SE 0.0165 then 0)
would otherwise count as a change however well the median had settled. The first level where
both hold is where the attack *converged*; the ladder stops there, or after ``max_doublings``
doublings, unconverged, with the reason.

Each level records the budget factor, the cumulative attack passes (example-iterations, one
forward and one backward pass of one example each: :attr:`robustctl.attacks.base.Attack.passes`),
the success rate with its standard error and the median breach distortion; the curve is logged
as an artifact and its plot, and the report marks every white-box cell that did not converge.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import Tensor

from robustctl.attacks.metrics import per_example_distortions
from robustctl.config.validation import require
from robustctl.evaluation.attack_runner import AttackOutcome, attack_metrics
from robustctl.evaluation.intervals import breach_median


@dataclass
class ConvergenceConfig:
    """``threat_model.convergence``: at most ``max_doublings`` doublings of every white-box
    attack's iterations (0: the configured budget only, convergence not measured), or of one
    attack's where ``attack_max_doublings`` names it (``{fmn_wb: 6}``: a higher cap for the
    attack the verdict rests on without raising the other's); ``distortion_tolerance``: the
    relative change of the median breach distortion that still counts as unchanged."""

    max_doublings: int = 2
    attack_max_doublings: dict[str, int] = field(default_factory=dict)
    distortion_tolerance: float = 0.02

    def __post_init__(self) -> None:
        for key, value in [("max_doublings", self.max_doublings)] + [
            (f"attack_max_doublings.{a}", v) for a, v in self.attack_max_doublings.items()
        ]:
            require(
                0 <= value <= 8,
                f"threat_model.convergence.{key}",
                f"must be in [0, 8], got {value}",
            )

    def cap(self, attack: str) -> int:
        """The most doublings ``attack``'s ladder may take."""
        return int(self.attack_max_doublings.get(attack, self.max_doublings))
        require(
            0 < self.distortion_tolerance < 1,
            "threat_model.convergence.distortion_tolerance",
            f"must be in (0, 1), got {self.distortion_tolerance}",
        )


@dataclass
class Level:
    """One rung of the ladder, over the clean-correct examples, cumulative over the rungs so
    far: ``budget`` (iterations factor), ``passes`` (attack passes so far), ``success`` and its
    ``standard_error``, ``median`` breach distortion (inf when fewer than half are breached),
    ``own_success``: the success of this rung's run alone, and ``examples``: n."""

    budget: int
    passes: int
    success: float
    standard_error: float
    median: float
    own_success: float
    examples: int

    def as_json(self) -> dict[str, float | int | None]:
        out = asdict(self)
        out["median"] = self.median if math.isfinite(self.median) else None
        return out


@dataclass
class Convergence:
    """The ladder's result: its ``levels``, whether it ``converged`` and at which budget factor
    (``budget``, the last level's when it did not), the ``reason`` (a sentence), the combined
    :class:`AttackOutcome` and each clean-correct example's smallest breach distortion."""

    levels: list[Level]
    converged: bool
    reason: str
    outcome: AttackOutcome
    distortions: np.ndarray

    @property
    def budget(self) -> int:
        return self.levels[-1].budget

    @property
    def passes(self) -> int:
        return self.levels[-1].passes


def level_of(budget: int, passes: int, distortions: np.ndarray, own: np.ndarray) -> Level:
    """The :class:`Level` of per-example breach distortions (inf: not breached)."""
    n = max(distortions.size, 1)
    success = float(np.isfinite(distortions).sum()) / n
    return Level(
        budget=budget,
        passes=passes,
        success=success,
        standard_error=math.sqrt(success * (1 - success) / n),
        median=breach_median(distortions) if distortions.size else math.inf,
        own_success=float(np.isfinite(own).sum()) / n,
        examples=distortions.size,
    )


def settled(previous: Level, current: Level, tolerance: float) -> tuple[bool, str]:
    """(whether one doubling changed success by at most the larger of the two levels' standard
    errors (at least one example) and the median breach distortion by less than ``tolerance``,
    relative; what changed)."""
    moved = abs(current.success - previous.success)
    resolution = 1 / max(current.examples, 1)
    error = max(previous.standard_error, current.standard_error, resolution)
    success_ok = moved <= error + 1e-12
    a, b = previous.median, current.median
    if math.isinf(a) and math.isinf(b):
        change = 0.0
    elif math.isinf(a) or math.isinf(b):
        change = math.inf
    else:
        change = abs(b - a) / a if a > 0 else (0.0 if b == a else math.inf)
    median_ok = change < tolerance
    what = (
        f"success {previous.success:.3f} -> {current.success:.3f} "
        f"(SE {error:.3f}), median {_show(a)} -> {_show(b)}"
    )
    return success_ok and median_ok, what


def _show(value: float) -> str:
    return f"{value:.4f}" if math.isfinite(value) else "inf"


def breach_distortions(outcome: AttackOutcome, x: Tensor) -> Tensor:
    """[N] per example: the distortion L2/sqrt(n) of its adversarial example where the attack
    breached it (clean-correct and misclassified), else inf."""
    distortion = per_example_distortions(x, outcome.x_adv)["distortion"]
    return torch.where(outcome.adversarial, distortion, torch.full_like(distortion, math.inf))


def combine(best: AttackOutcome, new: AttackOutcome, x: Tensor, stage: str) -> AttackOutcome:
    """Per example, the outcome with the smaller breach distortion (``best`` on ties), with the
    metrics recomputed over the combination."""
    take = breach_distortions(new, x) < breach_distortions(best, x)
    view = (-1, *([1] * (x.dim() - 1)))
    x_adv = torch.where(take.view(view), new.x_adv, best.x_adv)
    success = torch.where(take, new.success, best.success)
    adv_pred = torch.where(take, new.adv_pred, best.adv_pred)
    metrics = attack_metrics(
        best.name, x, x_adv, best.labels, best.clean_pred, adv_pred, None, stage
    )
    return AttackOutcome(
        best.name,
        x_adv,
        success,
        adv_pred,
        best.clean_pred,
        best.labels,
        None,
        metrics,
        best.seconds + new.seconds,
    )


def converge(
    run_level: Callable[[int, Tensor | None], tuple[AttackOutcome, int]],
    x: Tensor,
    config: ConvergenceConfig,
    stage: str,
    report: Callable[[str], None] = lambda _: None,
    max_doublings: int | None = None,
) -> Convergence:
    """Run ``run_level(budget, incumbents) -> (outcome, passes of that run)`` for budget 1, 2,
    4, ... until :func:`settled` or ``max_doublings`` doublings (default
    ``config.max_doublings``; the stage passes ``config.cap(attack)``) (module docstring);
    ``incumbents``: None at budget 1, then each image's best adversarial example so far (the
    image itself where there is none), where its search restarts. ``x`` the attacked images
    (CPU), ``report`` prints one line per level."""
    cap = config.max_doublings if max_doublings is None else max_doublings
    outcome, passes = run_level(1, None)
    correct = (outcome.clean_pred == outcome.labels).numpy()
    first = breach_distortions(outcome, x).numpy()[correct]
    levels = [level_of(1, passes, first, first)]
    report(_line(levels[-1]))
    if cap == 0:
        return Convergence(
            levels,
            False,
            "not measured (threat_model.convergence.max_doublings=0)",
            outcome,
            first,
        )
    reason = ""
    for j in range(1, cap + 1):
        budget = 2**j
        new, run_passes = run_level(budget, outcome.x_adv)
        passes += run_passes
        own = breach_distortions(new, x).numpy()[correct]
        outcome = combine(outcome, new, x, stage)
        distortions = breach_distortions(outcome, x).numpy()[correct]
        levels.append(level_of(budget, passes, distortions, own))
        report(_line(levels[-1]))
        done, reason = settled(levels[-2], levels[-1], config.distortion_tolerance)
        if done:
            return Convergence(
                levels,
                True,
                f"converged at {budget}x the iterations: {reason}",
                outcome,
                distortions,
            )
    return Convergence(
        levels,
        False,
        f"not converged after {cap} doubling(s) (cap): {reason}",
        outcome,
        distortions,
    )


def _line(level: Level) -> str:
    return (
        f"  budget x{level.budget}: success {level.success:.3f} ± {level.standard_error:.3f}, "
        f"median breach {_show(level.median)}, {level.passes} passes"
    )
