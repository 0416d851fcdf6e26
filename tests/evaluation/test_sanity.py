"""The gradient-masking checks: each fails on the numbers it exists to catch, passes on healthy
ones, says when it cannot check; and the noise baseline against a direct computation. (A model
that masks its gradients trips a check end to end: tests/threat_models/test_sanity_stage.py.)"""

from __future__ import annotations

import pytest
import torch

from robustctl.evaluation.sanity import (
    FAILED,
    NOT_CHECKED,
    PASSED,
    attack_beats_noise,
    iterative_beats_single_step,
    more_iterations_not_weaker,
    noise_baseline,
    query_not_stronger_than_whitebox,
    success_grows_with_eps,
    transfer_not_stronger_than_whitebox,
    unbounded_attack_succeeds,
)


def test_an_unbounded_attack_must_reach_nearly_every_image():
    healthy = {"graybox/cw_hc/success_rate": 0.98, "graybox/cw_hc/success_rate_ci_high": 0.996}
    assert unbounded_attack_succeeds(healthy).status == PASSED
    masked = {"graybox/deepfool/success_rate": 0.4, "graybox/deepfool/success_rate_ci_high": 0.55}
    check = unbounded_attack_succeeds(masked)
    assert check.status == FAILED and "deepfool 0.400" in check.detail
    assert check.tag.startswith("failed: unbounded attack")
    bounded_only = {"graybox/fgsm-0.1/success_rate": 0.3}  # a bounded attack may fail
    assert unbounded_attack_succeeds(bounded_only).status == NOT_CHECKED
    budgeted = {"graybox/cw/success_rate": 0.83}  # plain C&W: 10 iterations are a budget
    assert unbounded_attack_succeeds(budgeted).status == NOT_CHECKED


def test_accuracy_must_not_rise_with_the_budget():
    falling = {"resiliency/fgsm/eps_0.05": 0.6, "resiliency/fgsm/eps_0.1": 0.3}
    assert success_grows_with_eps(falling).status == PASSED
    noise = {"resiliency/fgsm/eps_0.05": 0.30, "resiliency/fgsm/eps_0.1": 0.31}  # within 0.02
    assert success_grows_with_eps(noise).status == PASSED
    rising = {
        "resiliency/bim/eps_0.05": 0.2,
        "resiliency/bim/eps_0.1": 0.1,
        "resiliency/bim/eps_0.2": 0.5,
    }
    check = success_grows_with_eps(rising)
    assert check.status == FAILED
    assert "accuracy 0.200 at eps 0.05 but 0.500 at eps 0.2" in check.detail
    assert success_grows_with_eps({}).status == NOT_CHECKED


def test_transferred_examples_must_not_beat_the_white_box_attack():
    base = {
        "whitebox/cw_wb/success_rate": 0.5,
        "whitebox/cw_wb/success_rate_ci_low": 0.4,
        "whitebox/cw_wb/success_rate_ci_high": 0.6,
        "whitebox/cw_wb/auc": 0.5,
        "whitebox/cw_wb/auc_ci_low": 0.45,
        "whitebox/cw_wb/auc_ci_high": 0.55,
    }
    healthy = {
        **base,
        "blackbox/cw_wb/transfer_rate": 0.55,  # intervals overlap: no evidence it is stronger
        "blackbox/cw_wb/transfer_rate_ci_low": 0.45,
        "blackbox/cw_wb/transfer_rate_ci_high": 0.65,
        "blackbox/cw_wb/auc": 0.9,
    }
    assert transfer_not_stronger_than_whitebox(healthy).status == PASSED
    stronger = {
        **healthy,
        "blackbox/cw_wb/transfer_rate": 0.9,
        "blackbox/cw_wb/transfer_rate_ci_low": 0.8,
        "blackbox/cw_wb/auc": 0.2,
        "blackbox/cw_wb/auc_ci_high": 0.3,
    }
    check = transfer_not_stronger_than_whitebox(stronger)
    assert check.status == FAILED
    assert "transfer rate 0.900 above" in check.detail and "AUC 0.200 below" in check.detail
    assert transfer_not_stronger_than_whitebox(base).status == NOT_CHECKED


def test_the_iterative_attack_must_not_be_weaker_than_the_single_step():
    healthy = {
        "resiliency/fgsm/eps_0.1": 0.6,
        "resiliency/bim/eps_0.1": 0.4,
        "resiliency/bim/eps_0.2": 0.9,  # no FGSM at 0.2: not compared
        "graybox/fgsm-0.1/success_rate": 0.5,
        "graybox/fgsm-0.1/success_rate_ci_low": 0.4,
        "graybox/bim-0.1/success_rate": 0.45,  # lower, but the intervals overlap
        "graybox/bim-0.1/success_rate_ci_high": 0.55,
    }
    assert iterative_beats_single_step(healthy).status == PASSED
    stuck = {**healthy, "resiliency/bim/eps_0.1": 0.61}  # within the 0.02 tolerance
    assert iterative_beats_single_step(stuck).status == PASSED
    masked = {
        **healthy,
        "resiliency/bim/eps_0.1": 0.7,
        "graybox/bim-0.1/success_rate": 0.2,
        "graybox/bim-0.1/success_rate_ci_high": 0.3,
    }
    check = iterative_beats_single_step(masked)
    assert check.status == FAILED
    assert "eps 0.1: accuracy 0.700 under bim, 0.600 under fgsm" in check.detail
    assert "bim-0.1 success 0.200 below fgsm-0.1 0.500" in check.detail
    only_one = {"resiliency/fgsm/eps_0.1": 0.6, "graybox/fgsm-0.05/success_rate": 0.3}
    assert iterative_beats_single_step(only_one).status == NOT_CHECKED


def test_a_query_attack_must_not_beat_the_white_box_attack():
    whitebox = {
        "whitebox/cw_wb/success_rate": 0.5,
        "whitebox/cw_wb/success_rate_ci_low": 0.4,
        "whitebox/cw_wb/success_rate_ci_high": 0.6,
    }
    query = {
        "blackbox/system_threshold": 3.0,  # not an attack: no queries
        "blackbox/hsj/success_rate": 0.55,  # overlapping intervals: no evidence
        "blackbox/hsj/success_rate_ci_low": 0.45,
        "blackbox/hsj/success_rate_ci_high": 0.65,
        "blackbox/hsj/queries_per_point": 900.0,
    }
    assert query_not_stronger_than_whitebox({**whitebox, **query}).status == PASSED
    masked = {
        **whitebox,
        **query,
        "blackbox/square/success_rate": 0.9,
        "blackbox/square/success_rate_ci_low": 0.8,
        "blackbox/square/success_rate_ci_high": 0.95,
        "blackbox/square/queries_per_point": 300.0,
    }
    check = query_not_stronger_than_whitebox(masked)
    assert check.status == FAILED
    assert "square 0.900 above white-box C&W-wb 0.500" in check.detail
    assert "hsj" not in check.detail
    transfer_only = {**whitebox, "blackbox/cw_wb/transfer_rate": 0.9}
    assert query_not_stronger_than_whitebox(transfer_only).status == NOT_CHECKED
    assert query_not_stronger_than_whitebox(query).status == NOT_CHECKED


def test_an_attack_must_beat_noise_of_its_own_norm():
    healthy = {
        "graybox/fgsm-0.1/success_rate": 0.6,
        "graybox/fgsm-0.1/noise_success_rate": 0.05,
        "graybox/cw/success_rate": 1.0,  # succeeds everywhere: passes whatever the noise does
        "graybox/cw/noise_success_rate": 1.0,
    }
    assert attack_beats_noise(healthy).status == PASSED
    weak = {**healthy, "graybox/fgsm-0.1/noise_success_rate": 0.6}
    check = attack_beats_noise(weak)
    assert check.status == FAILED and "fgsm-0.1 0.600 vs noise 0.600" in check.detail
    assert attack_beats_noise({"graybox/fgsm-0.1/success_rate": 0.6}).status == NOT_CHECKED


def test_more_iterations_must_not_succeed_less_often():
    base, more = "whitebox/cw_wb/check_success_rate", "whitebox/cw_wb/more_iterations_success_rate"
    assert more_iterations_not_weaker({base: 0.5, more: 0.75}).status == PASSED
    check = more_iterations_not_weaker({base: 0.75, more: 0.5})
    assert check.status == FAILED and "0.500 < 0.750" in check.detail
    assert more_iterations_not_weaker({}).status == NOT_CHECKED


def test_the_noise_baseline_is_same_norm_noise_counted_over_clean_correct_images():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    x = torch.rand(30, 1, 4, 4)
    x_adv = (x + 0.3 * torch.randn_like(x)).clamp(0, 1)
    y = model(x).argmax(1)
    y[:5] = (y[:5] + 1) % 3  # five clean errors: outside the denominator
    clean_pred = model(x).argmax(1)
    got = noise_baseline(model, x, x_adv, y, clean_pred, "k", batch_size=7, seed=3)
    # direct: the same seeded Gaussian directions, scaled image by image
    directions = torch.randn(30, 16, generator=torch.Generator().manual_seed(3))
    hits = correct = 0
    for i in range(30):
        norm = float((x_adv[i] - x[i]).norm())
        noisy = (x[i].flatten() + directions[i] / directions[i].norm() * norm).clamp(0, 1)
        if clean_pred[i] == y[i]:
            correct += 1
            hits += int(model(noisy.view(1, 1, 4, 4)).argmax(1).item() != y[i].item())
    assert correct == 25
    assert got["k"] == pytest.approx(hits / correct)
    assert got["k_ci_low"] <= got["k"] <= got["k_ci_high"]
