"""Minimal-distortion attacks on an affine classifier, where the exact minimum is known.

For f(x) = W x + b and an input x of class y = argmax f(x), the region of class y is the polytope
{x' : f_y(x') >= f_j(x') for all j}, so the smallest L2 perturbation that changes the prediction
is the distance to its nearest face's hyperplane:

    d*(x) = min_{j != y} (f_y(x) - f_j(x)) / ||w_y - w_j||_2

(any point of another class lies beyond one of these hyperplanes, and the projection onto the
nearest one is reached). The inputs sit in the interior of [0, 1] (x in [0.25, 0.75], d* <= 0.08),
so the box never binds. DeepFool must land at (1 + overshoot) d* after its first step; C&W-L2, run
long enough, must come within a few percent above d* where the nearest boundary is the runner-up
class's (elsewhere its objective has a local minimum at the runner-up's boundary), and can never
beat d* while flipping the class. A distortion twice (or half) as large fails both checks.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import Tensor, nn

from robustctl.attacks import CW, DeepFool
from robustctl.attacks.metrics import per_example_distortions


@dataclass
class Problem:
    model: nn.Module
    weight: Tensor  # [K, n]
    x: Tensor  # [N, 1, 4, 4]
    y: Tensor  # [N] the class f assigns to x
    exact: Tensor  # [N] d*(x), float64
    nearest: Tensor  # [N] the class j of the nearest boundary
    second: Tensor  # [N] distance to the second-nearest boundary
    runner_up: Tensor  # [N] the class with the second-largest logit
    to_runner_up: Tensor  # [N] distance to the boundary between y and the runner-up class


def affine_problem(
    seed: int = 0, classes: int = 4, count: int = 10, lo: float = 0.03, hi: float = 0.08
) -> Problem:
    """Random weights with unequal row norms (so the nearest boundary is not always the runner-up
    class), inputs drawn in [0.25, 0.75]^16 and kept when lo <= d* <= hi."""
    g = torch.Generator().manual_seed(seed)
    n = 16
    weight = torch.randn(classes, n, generator=g) * torch.linspace(0.4, 1.6, classes)[:, None]
    bias = -weight @ torch.full((n,), 0.5)  # every class ties at the grey image
    x = 0.25 + 0.5 * torch.rand(200, n, generator=g)
    w64, x64 = weight.double(), x.double()
    f = x64 @ w64.T + bias.double()
    y = f.argmax(1)
    rows = torch.arange(len(x))
    dist = (f[rows, y][:, None] - f) / (w64[y][:, None, :] - w64[None]).norm(dim=2)
    dist[rows, y] = float("inf")
    ordered, order = dist.sort(1)
    keep = ((ordered[:, 0] >= lo) & (ordered[:, 0] <= hi)).nonzero().squeeze(1)[:count]
    layer = nn.Linear(n, classes)
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
    runner_up = f.scatter(1, y[:, None], float("-inf")).argmax(1)
    return Problem(
        nn.Sequential(nn.Flatten(), layer).eval(),
        weight,
        x[keep].view(-1, 1, 4, 4),
        y[keep],
        ordered[keep, 0],
        order[keep, 0],
        ordered[keep, 1],
        runner_up[keep],
        dist[rows, runner_up][keep],
    )


@pytest.fixture(scope="module")
def problem() -> Problem:
    return affine_problem()


def l2(x: Tensor, x_adv: Tensor) -> Tensor:
    return per_example_distortions(x, x_adv)["l2"]


def test_the_problem_is_a_fair_test(problem):
    """Several examples, more than one nearest class, a nearest boundary that is not the runner-up
    logit's for some example, and room in the box for any perturbation up to 2 d*."""
    assert (
        len(problem.y) == 10 and len(problem.nearest.unique()) >= 2 and len(problem.y.unique()) >= 2
    )
    assert (problem.nearest != problem.runner_up).any()
    assert (problem.x - 2 * problem.exact.max() > 0).all() and (
        problem.x + 2 * problem.exact.max() < 1
    ).all()


@pytest.mark.parametrize("overshoot", [0.02, 0.5])
def test_deepfool_distortion_is_the_overshot_exact_minimum(problem, overshoot):
    """One step to the nearest hyperplane, scaled by 1 + overshoot (0.5 too, so an ignored or
    doubled overshoot fails the 2% tolerance; the step's +1e-4 adds at most 3e-5 to the L2 here)."""
    result = DeepFool(problem.model, steps=50, overshoot=overshoot)(problem.x, problem.y)
    assert result.success.all()
    ratio = l2(problem.x, result.x_adv) / ((1 + overshoot) * problem.exact)
    assert ((ratio > 0.98) & (ratio < 1.02)).all(), ratio
    if overshoot == 0.02:  # landing short of the second boundary, it must be in the nearest class
        alone = problem.second > 1.05 * problem.exact
        assert alone.any() and torch.equal(result.pred[alone], problem.nearest[alone])


def test_cw_l2_comes_within_a_few_percent_above_the_exact_minimum(problem):
    """Long C&W runs (9 x 200 Adam steps, no early abort, kappa 0) end just past a boundary: never
    below d* (nothing that flips the class is closer) and at most 2% beyond the boundary of the
    runner-up class, which is the nearest one for most examples (there: within 2% of d*).

    C&W's f(x') = max(Z_y - max_{i != y} Z_i, 0) only sees the largest other logit, so where the
    nearest boundary belongs to another class it stops at the runner-up's boundary, a local minimum
    of its objective (Carlini's algorithm, not a bug): measured 1.21, 1.76 and 1.26 d* on the three
    such examples here, each within 0.2% of its runner-up boundary's distance.
    """
    attack = CW(
        problem.model,
        binary_steps=9,
        steps=200,
        lr=0.01,
        c_init=0.1,
        confidence=0.0,
        abort_early=False,
    )
    result = attack(problem.x, problem.y)
    assert result.success.all()
    l2_cw = l2(problem.x, result.x_adv)
    assert (l2_cw > problem.exact * (1 - 1e-4)).all(), (
        l2_cw / problem.exact
    )  # float32 round-off only
    assert (l2_cw < 1.02 * problem.to_runner_up).all(), l2_cw / problem.to_runner_up
    runner_is_nearest = problem.to_runner_up <= problem.exact * (1 + 1e-9)
    assert (
        runner_is_nearest.sum() >= 5
        and (l2_cw[runner_is_nearest] < 1.02 * problem.exact[runner_is_nearest]).all()
    )
    # within 2% of d*, an example whose second boundary is farther than that can only cross the
    # nearest
    alone = runner_is_nearest & (problem.second > 1.05 * problem.exact)
    assert alone.any() and torch.equal(result.pred[alone], problem.nearest[alone])


def exact_linf(problem: Problem) -> tuple[Tensor, Tensor]:
    """(d*_inf(x), the Linf distance to the runner-up class's boundary): the Linf distance to a
    hyperplane w.x = c is |w.x - c| / ||w||_1 (the dual norm), so
    d*_inf = min_{j != y} (f_y - f_j) / ||w_y - w_j||_1."""
    w = problem.weight.double()
    x = problem.x.flatten(1).double()
    f = (x - 0.5) @ w.T  # b = -W 0.5: every class ties at the grey image
    rows = torch.arange(len(x))
    gap = f[rows, problem.y][:, None] - f
    dist = gap / (w[problem.y][:, None, :] - w[None]).abs().sum(2)
    dist[rows, problem.y] = float("inf")
    return dist.min(1).values, dist[rows, problem.runner_up]


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_fmn_finds_the_exact_minimum_where_the_runner_up_boundary_is_nearest(problem, norm):
    """FMN descends the runner-up margin like C&W, so the same local minimum holds: never below
    d* (in its norm), within 2% of the runner-up class's boundary, so within 2% of d* where that
    boundary is the nearest; ``last_norms`` is the distance of the example it returns."""
    from robustctl.attacks.fmn import FMN

    if norm == "l2":
        exact, to_runner_up = problem.exact, problem.to_runner_up
    else:
        exact, to_runner_up = exact_linf(problem)
    attack = FMN(problem.model, norm=norm, steps=300)
    result = attack(problem.x, problem.y)
    assert result.success.all()
    delta = (result.x_adv - problem.x).flatten(1).double()
    found = delta.norm(dim=1) if norm == "l2" else delta.abs().amax(1)
    assert torch.allclose(attack.last_norms.double(), found, rtol=1e-4)
    assert (found > exact * (1 - 1e-4)).all(), found / exact
    assert (found < 1.02 * to_runner_up).all(), found / to_runner_up
    nearest = to_runner_up <= exact * (1 + 1e-9)
    assert nearest.sum() >= 5 and (found[nearest] < 1.02 * exact[nearest]).all(), found / exact
