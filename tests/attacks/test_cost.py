"""Every attack's cost, counted where it calls the model (``Attack.counted``): forward passes
and input-gradient back-propagations per example, against counts worked out from each method
(FGSM: one gradient plus the base's final prediction; APGD: the passes it counts itself; Square:
no gradient at all) and as ``run_attack`` logs them."""

from __future__ import annotations

import pytest

from robustctl import metric_keys as keys
from robustctl.attacks import build
from robustctl.evaluation.attack_runner import run_attack


def test_fgsm_costs_one_gradient_and_two_forwards_per_example(trained):
    x, y = trained.x[:12], trained.y[:12]
    attack = build("fgsm", trained.model, eps=0.1)
    attack(x, y)
    # the gradient (forward + backward), then the base's prediction on x' (forward)
    assert (attack.forwards, attack.backwards) == (2 * 12, 12)


def test_apgd_backwards_equal_the_passes_it_counts_and_eot_multiplies_them(trained):
    x, y = trained.x[:10], trained.y[:10]
    attack = build("apgd", trained.model, eps=0.02, steps=7)
    attack(x, y)
    assert attack.backwards == attack.passes > 0
    eot = build("apgd", trained.model, eps=0.02, steps=7, eot=3)
    eot(x, y)
    # a tensor forwarded three times per step counts three gradients per step
    assert eot.backwards == eot.passes == 3 * attack.passes


def test_square_takes_no_gradient_and_its_forwards_cover_its_queries(trained):
    x, y = trained.x[:10], trained.y[:10]
    attack = build("square", trained.model, eps=0.1, queries=40)
    attack(x, y)
    assert attack.backwards == 0
    assert attack.forwards >= attack.queries_used > 0


@pytest.mark.parametrize("stage", [keys.GRAYBOX, keys.WHITEBOX])
def test_run_attack_logs_the_cost_per_example_of_this_run_only(trained, stage):
    x, y = trained.x[:12], trained.y[:12]
    attack = build("fgsm", trained.model, eps=0.1)
    attack(x, y)  # an earlier call: not this run's cost
    metrics = run_attack(attack, x, y, batch_size=5, stage=stage).metrics
    assert metrics[keys.attack_key(stage, "fgsm", keys.FORWARDS_PER_EXAMPLE)] == 2.0
    assert metrics[keys.attack_key(stage, "fgsm", keys.BACKWARDS_PER_EXAMPLE)] == 1.0
