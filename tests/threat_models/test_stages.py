"""The values the threat-model stages produce, on a tiny trained model, checked against an
independent reference (torchattacks for the gray-box success rate) or against what the stage's
goal implies (white-box: the detector is breached; black-box: pairs = transfers of
clean-correct)."""

from __future__ import annotations

import pytest
import torch

from robustctl import metric_keys as keys
from robustctl.models import PredictionView
from robustctl.threat_models import blackbox, graybox, prepare, run_threat_model, whitebox


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


def test_blackbox_pairs_are_the_transfers_of_clean_correct_images(setup):
    _, _, _, ctx = setup
    m = blackbox.run(ctx).metrics
    assert m[keys.BLACKBOX_PROXY_AGREEMENT] >= 0.5  # 4 classes: chance is about 0.25
    assert m[keys.BLACKBOX_PROXY_SUCCESS_RATE] > 0.2  # the proxy attack works (budget cut 7x)
    n_correct = int((ctx.clean_pred == ctx.y).sum())
    assert m[keys.blackbox(keys.PAIRS)] > 0  # so the relation below is not 0 == 0
    assert m[keys.blackbox(keys.PAIRS)] == round(m[keys.BLACKBOX_TRANSFER_RATE] * n_correct)
    assert (keys.blackbox(keys.AUC) in m) == (m[keys.blackbox(keys.PAIRS)] >= 5)


def test_run_threat_model_yields_the_detector_then_each_stage_timed(setup):
    cfg, model, data, ctx = setup
    cfg.threat_model.stages = ["whitebox"]
    try:
        results = list(run_threat_model(cfg, model, data, ctx.detector))
    finally:
        cfg.threat_model.stages = ["graybox", "whitebox", "blackbox"]
    assert list(results[0].metrics) == [
        keys.KDE_BANDWIDTH,
        keys.KDE_KERNEL_POINTS,
        keys.KDE_HELDOUT_LOGLIK,
    ]
    assert len(results) == 2 and keys.stage_time("whitebox") in results[1].metrics
