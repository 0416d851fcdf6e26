"""The values the threat-model stages produce, on a tiny trained model, checked against an
independent reference (torchattacks for the gray-box success rate) or against what the stage's
goal implies (white-box: the detector is breached; black-box: pairs = transfers of
clean-correct)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from robustctl import metric_keys as keys
from robustctl.defenses import threshold_at
from robustctl.errors import ConfigError
from robustctl.models import PredictionView
from robustctl.threat_models import blackbox, graybox, prepare, run_threat_model, whitebox
from robustctl.threat_models.context import detector_scores
from robustctl.threat_models.convergence import ConvergenceConfig


@pytest.fixture(scope="module")
def setup(target):
    cfg, model, data = target
    return cfg, model, data, prepare(cfg, model, data)


def test_graybox_success_rate_matches_torchattacks(setup):
    torchattacks = pytest.importorskip("torchattacks")
    cfg, model, _, ctx = setup
    result = graybox.run(ctx)
    x_adv = torchattacks.FGSM(PredictionView(model), eps=0.1)(ctx.x, ctx.y)
    with torch.no_grad():
        adv_pred = model.predict_logits(x_adv).argmax(1)
    correct = ctx.clean_pred == ctx.y
    expected = (adv_pred[correct] != ctx.y[correct]).float().mean().item()
    assert result.metrics[keys.graybox("fgsm-0.1", keys.SUCCESS_RATE)] == pytest.approx(
        expected, abs=1e-6
    )
    pairs = int((correct & (adv_pred != ctx.y)).sum())
    assert result.metrics[keys.graybox("fgsm-0.1", keys.PAIRS)] == pairs
    # accuracy under FGSM-0.1 (resiliency) counts every example, misclassified clean ones included
    assert result.metrics[keys.resiliency("fgsm", 0.1)] == pytest.approx(
        (adv_pred == ctx.y).float().mean().item()
    )
    assert (
        len(result.step_metrics[keys.bim_path("bim-0.1", keys.INPUT_GRAD_NORM)])
        == graybox.BIM_PATH_STEPS + 1
    )
    assert set(result.figures) >= {
        "plots/graybox/roc.png",
        "plots/graybox/fgsm-0.1_confusion.png",
        "plots/resiliency.png",
    }


@pytest.mark.slow
def test_whitebox_breaches_the_detector_it_attacks(setup):
    _, _, _, ctx = setup
    result = whitebox.run(ctx)
    m = result.metrics
    assert m[keys.whitebox(keys.SUCCESS_RATE)] >= 0.5
    assert m[keys.whitebox(keys.PAIRS)] >= 5 and m[keys.whitebox(keys.AUC)] <= 0.6
    assert 0 < m[keys.whitebox("distortion")] < 0.5
    assert result.tags[keys.WHITEBOX_THRESHOLD_TAG] == "per_example"
    goal_reached = m[keys.whitebox(keys.SUCCESS_RATE)] >= 1.0 and m[keys.whitebox(keys.AUC)] <= 0.5
    assert (keys.note_tag(keys.WHITEBOX, keys.CW_WB) in result.tags) == (not goal_reached)
    # the success-vs-budget curve: one entry per clean-correct example, finite for the breached
    curve = result.documents[keys.WHITEBOX_BUDGET_CURVE]["distortions"]
    breached = [d for d in curve if d is not None]
    assert len(curve) == int((ctx.clean_pred == ctx.y).sum())
    assert len(breached) == m[keys.whitebox(keys.PAIRS)]
    assert sum(breached) / len(breached) == pytest.approx(m[keys.whitebox("distortion")], rel=1e-6)
    # half of the clean-correct examples are breached at the median budget, not below it
    median = m[keys.whitebox(keys.MEDIAN_DISTORTION)]
    if len(breached) >= len(curve) / 2:
        assert sum(d <= median for d in breached) >= len(curve) / 2
        assert sum(d < median for d in breached) < len(curve) / 2
        low = m[keys.ci_low(keys.whitebox(keys.MEDIAN_DISTORTION))]
        assert low <= median
    else:
        assert math.isnan(median)
    assert "plots/whitebox/success_vs_budget.png" in result.figures


def test_detector_threshold_comes_from_the_validation_split(setup):
    cfg, model, data, ctx = setup
    wb = dataclasses.replace(cfg.threat_model.whitebox, threshold="detector", fpr=0.1)
    attack = whitebox.cw_wb_attack(wb, model, ctx.detector, data, 64)
    _, val_scores = detector_scores(model, ctx.detector, data.x_val, 64)
    assert attack.thresholds == threshold_at(val_scores, 0.1)
    assert attack.thresholds != threshold_at(ctx.clean_scores, 0.1)  # not the attacked images
    no_val = dataclasses.replace(data, x_val=data.x_val[:0], y_val=data.y_val[:0])
    with pytest.raises(ConfigError, match="validation split"):
        whitebox.cw_wb_attack(wb, model, ctx.detector, no_val, 64)


def test_transfer_rate_counts_only_successful_proxy_examples_by_hand():
    """Six images of class 0. The target is right on 0-4 when clean; the proxy attack succeeded on
    0, 1, 2 and 5; the target is fooled on 0, 3 and 5. Candidates: 0, 1, 2 (5's clean image is
    already wrong on the target); of those only 0 transfers: 1/3. (Counting every target-correct
    image, failed proxy attacks included, would give 2/5.)"""
    labels = torch.zeros(6, dtype=torch.long)
    proxy_adversarial = torch.tensor([1, 1, 1, 0, 0, 1], dtype=torch.bool)
    target_clean_pred = torch.tensor([0, 0, 0, 0, 0, 3])
    target_adv_pred = torch.tensor([1, 0, 0, 2, 0, 3])
    m = blackbox.transfer_metrics(proxy_adversarial, target_clean_pred, target_adv_pred, labels)
    assert m[keys.BLACKBOX_TRANSFER_RATE] == pytest.approx(1 / 3)
    assert m[keys.BLACKBOX_TRANSFER_CANDIDATES] == 3
    assert m[keys.ci_low(keys.BLACKBOX_TRANSFER_RATE)] == pytest.approx(0.0615, abs=5e-4)
    assert m[keys.ci_high(keys.BLACKBOX_TRANSFER_RATE)] == pytest.approx(0.7923, abs=5e-4)


@pytest.mark.slow  # ~9-12 s: the system tier keeps `make test` under 8 min
def test_blackbox_transfers_are_a_subset_of_the_pairs(setup):
    _, _, _, ctx = setup
    m = blackbox.run(ctx).metrics
    assert m[keys.BLACKBOX_PROXY_AGREEMENT] >= 0.5  # 4 classes: chance is about 0.25
    assert m[keys.BLACKBOX_PROXY_SUCCESS_RATE] > 0.2  # the proxy attack works (budget cut 7x)
    candidates = m[keys.BLACKBOX_TRANSFER_CANDIDATES]
    assert candidates > 0
    transfers = round(m[keys.BLACKBOX_TRANSFER_RATE] * candidates)
    # every transfer is a (target-correct, target-fooled) pair; pairs may also include examples
    # the proxy attack did not breach but the target misclassifies anyway
    assert transfers <= m[keys.blackbox(keys.PAIRS)]
    assert keys.blackbox(keys.SUCCESS_RATE) not in m  # the proxy's success has its own name
    assert (keys.blackbox(keys.AUC) in m) == (m[keys.blackbox(keys.PAIRS)] >= 5)


def test_run_threat_model_yields_the_detector_then_each_stage_timed(setup):
    cfg, model, data, ctx = setup
    # what is checked is the order and the timing of the results, not the attack: a small budget
    wb = dataclasses.replace(cfg.threat_model.whitebox, steps=10)
    tm = dataclasses.replace(cfg.threat_model, stages=["whitebox"], whitebox=wb)
    results = list(
        run_threat_model(dataclasses.replace(cfg, threat_model=tm), model, data, ctx.detector)
    )
    assert list(results[0].metrics) == [
        keys.KDE_BANDWIDTH,
        keys.KDE_KERNEL_POINTS,
        keys.KDE_HELDOUT_LOGLIK,
    ]
    assert len(results) == 2 and keys.stage_time("whitebox") in results[1].metrics


def test_each_whitebox_attack_climbs_its_own_ladder_cap(setup):
    """``convergence.attack_max_doublings`` gives FMN-wb one doubling while C&W-wb keeps the
    shared cap of none: C&W-wb stops at its base budget, FMN-wb runs a second rung."""
    cfg, model, data, ctx = setup
    tm = dataclasses.replace(
        cfg.threat_model,
        stages=["whitebox"],
        whitebox=dataclasses.replace(cfg.threat_model.whitebox, steps=10),
        fmn_wb=dataclasses.replace(cfg.threat_model.fmn_wb, steps=5),
        convergence=ConvergenceConfig(max_doublings=0, attack_max_doublings={"fmn_wb": 1}),
    )
    results = list(
        run_threat_model(dataclasses.replace(cfg, threat_model=tm), model, data, ctx.detector)
    )
    m = results[-1].metrics
    factor = keys.BUDGET_FACTOR
    assert m[keys.attack_key(keys.WHITEBOX, keys.CW_WB, factor)] == 1.0
    assert m[keys.attack_key(keys.WHITEBOX, keys.FMN_WB, factor)] == 2.0
