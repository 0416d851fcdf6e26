"""The robust stage (robustctl/threat_models/robust.py) on the tiny synthetic target with its KDE
detector: its numbers are consistent with each other and with the per-point record it logs, every
flag is reported, robust accuracy with rejection follows its definition (the threshold's
false-positive rate on validation images, the detector-blind and adaptive counts, APGD-wb's
examples in the ball and undetected), and it reports the same numbers with the model on the fake
accelerator."""

from __future__ import annotations

import copy
import dataclasses

import pytest

from robustctl import metric_keys as keys
from robustctl.composition import compose
from robustctl.evaluation.robust_accuracy import EnsembleConfig, RejectionConfig
from robustctl.threat_models import STAGES, prepare
from robustctl.threat_models import robust as robust_stage
from robustctl.threat_models.apgd_wb import ApgdWbConfig, APGDWhiteBox, apgd_wb_config
from robustctl.threat_models.context import detector_scores
from robustctl.threat_models.rejection import RejectionResult
from tests.fake_accelerator import ACCEL, FakeAccelerator

SMALL = {
    "apgd-ce": {"steps": 10},
    "apgd-t": {"steps": 10, "n_target_classes": 2},
    "fab-t": {"steps": 10, "n_target_classes": 2},
    "square": {"queries": 100},
}


def robust_cfg(cfg, eps=0.05, rejection_steps=10):
    tm = dataclasses.replace(
        cfg.threat_model,
        stages=["robust"],
        num_samples=30,
        robust=EnsembleConfig(
            eps=eps, members=SMALL, rejection=RejectionConfig(steps=rejection_steps)
        ),
    )
    return dataclasses.replace(cfg, threat_model=tm)


@pytest.fixture(scope="module")
def ran(target):
    cfg, model, data = target
    cfg = robust_cfg(cfg)
    return robust_stage.run(prepare(cfg, model, data))


def key(attack, metric):
    return keys.attack_key(keys.ROBUST, attack, metric)


def test_numbers_agree_with_each_other_and_the_point_record(ran):
    m = ran.metrics
    members = [label for label in SMALL]
    after = [m[key(label, keys.ROBUST_ACCURACY)] for label in members]
    clean = m[key(keys.ENSEMBLE, keys.CLEAN_ACCURACY_METRIC)]
    robust = m[key(keys.ENSEMBLE, keys.ROBUST_ACCURACY)]
    assert clean >= after[0] and all(a >= b for a, b in zip(after, after[1:], strict=False))
    assert robust == after[-1]
    points = ran.documents[keys.ROBUST_BROKEN_BY]["points"]
    assert len(points) == m[key(keys.ENSEMBLE, keys.POINTS)] == 30
    for label in members:
        assert sum(p["broken_by"] == label for p in points) == m[key(label, keys.BROKEN)]
    assert sum(p["broken_by"] == "robust" for p in points) == round(robust * 30)
    assert sum(p["broken_by"] == "misclassified" for p in points) == round((1 - clean) * 30)
    low, high = (
        m[keys.ci_low(key(keys.ENSEMBLE, keys.ROBUST_ACCURACY))],
        m[keys.ci_high(key(keys.ENSEMBLE, keys.ROBUST_ACCURACY))],
    )
    assert low <= robust <= high
    assert m[key("square", keys.QUERIES_PER_POINT)] <= 100 + 1  # the budget and the clean check
    assert m[key("apgd-ce", keys.PASSES_PER_POINT)] == pytest.approx(11)  # steps + 1
    assert "plots/robust/robust_accuracy.png" in ran.figures


def test_every_flag_is_reported(ran):
    flags = [t for t in ran.tags if t.startswith("robust/flag/")]
    assert sorted(flags) == sorted(
        keys.robust_flag_tag(name)
        for name in (
            "randomized",
            "zero_gradients",
            "gradient_free_beats_gradients",
            "train_mode_differs",
            "softmax_outputs",
        )
    )
    assert all(ran.tags[t].startswith(("raised: ", "clear: ")) for t in flags)
    raised = [t for t in flags if ran.tags[t].startswith("raised: ")]
    # the raised flags are the report's footnote on the robust accuracy
    assert (keys.note_tag(keys.ROBUST, keys.ENSEMBLE) in ran.tags) == bool(raised)
    assert ran.tags[keys.robust_flag_tag("randomized")].startswith("clear: ")
    assert ran.tags[keys.ROBUST_VERSION_TAG] == "standard, linf eps 0.05"


def test_the_stage_is_registered_with_its_preset():
    _, cfg = compose(["threat_model=robust"])
    assert cfg.threat_model.stages == ["robust"] and "robust" in STAGES
    assert cfg.threat_model.robust.version == "standard"


@pytest.mark.slow  # the ensemble twice: ~10 s
def test_the_stage_reports_the_cpu_numbers_from_the_device(target, ran):
    cfg, model, data = target
    cfg = robust_cfg(cfg)
    with FakeAccelerator():
        accel = robust_stage.run(prepare(cfg, copy.deepcopy(model).to(ACCEL), data))
    timeless = lambda m: {k: v for k, v in m.items() if not k.endswith("seconds")}  # noqa: E731
    assert timeless(accel.metrics) == pytest.approx(timeless(ran.metrics), rel=0, abs=0)


@pytest.fixture(scope="module")
def with_detector(target):
    """The stage at eps 0.2, where APGD-wb gets undetected examples through KDE (a probe:
    0.9 of 30 points at 50 steps)."""
    cfg, model, data = target
    cfg = robust_cfg(cfg, eps=0.2, rejection_steps=30)
    ctx = prepare(cfg, model, data)
    return ctx, robust_stage.run(ctx)


def test_robust_accuracy_with_rejection_follows_its_definition(with_detector):
    ctx, ran = with_detector
    m = ran.metrics
    points = ran.documents[keys.ROBUST_BROKEN_BY]["points"]
    outcome = [p["with_detector"] for p in points]
    n = len(points)

    def share(*states):
        return sum(o not in states for o in outcome) / n

    wrong = ("misclassified", "clean rejected")
    clean = m[key(keys.WITH_DETECTOR, keys.CLEAN_ACCURACY_METRIC)]
    blind = m[key(keys.DETECTOR_BLIND, keys.ROBUST_ACCURACY)]
    adaptive = m[key(keys.APGD_WB, keys.ROBUST_ACCURACY)]
    assert clean == share(*wrong)
    assert blind == share(*wrong, "detector-blind")
    assert adaptive == share(*wrong, "detector-blind", "apgd-wb")
    assert m[key(keys.APGD_WB, keys.BROKEN)] == outcome.count("apgd-wb")
    # a point is only broken through the detector where the ensemble broke it without it
    for p in points:
        if p["with_detector"] == "detector-blind":
            assert p["broken_by"] not in ("robust", "misclassified")
        if p["broken_by"] == "misclassified":
            assert p["with_detector"] == "misclassified"
    assert m[key(keys.ENSEMBLE, keys.CLEAN_ACCURACY_METRIC)] >= clean >= blind >= adaptive
    # the adaptive attack gets through where the detector-blind examples were rejected
    assert adaptive < blind
    assert m[key(keys.APGD_WB, keys.PASSES_PER_POINT)] == pytest.approx(31)  # steps + 1, 1 run
    # the threshold: at most 5% of the clean validation images score above it
    threshold = m[key(keys.WITH_DETECTOR, keys.THRESHOLD)]
    assert ran.tags[keys.ROBUST_THRESHOLD_TAG].startswith(f"{threshold:.6g} at fpr 0.05 on ")
    _, val_scores = detector_scores(ctx.model, ctx.detector, ctx.data.x_val, 256)
    assert (val_scores > threshold).float().mean() <= 0.05
    assert (val_scores >= threshold).float().mean() > 0.05 - 1 / len(val_scores)
    assert "plots/robust/with_detector.png" in ran.figures


def test_apgd_wb_examples_stay_in_the_ball_and_its_successes_are_undetected(with_detector):
    ctx, ran = with_detector
    threshold = ran.metrics[key(keys.WITH_DETECTOR, keys.THRESHOLD)]
    config = apgd_wb_config(ctx.cfg.threat_model.whitebox, eps=0.2, steps=30, threshold="detector")
    attack = APGDWhiteBox(ctx.model, ctx.detector, config, thresholds=threshold)
    result = attack(ctx.x, ctx.y)
    assert (result.x_adv - ctx.x).abs().max() <= 0.2 + 1e-6
    assert result.x_adv.min() >= 0 and result.x_adv.max() <= 1
    pred, scores = detector_scores(ctx.model, ctx.detector, result.x_adv, 256)
    through = (pred != ctx.y) & (scores <= threshold)
    assert through.float().mean() >= 0.5
    # blind to the detector (lambda = 0), the same attack is rejected more often
    blind = APGDWhiteBox(
        ctx.model,
        ctx.detector,
        dataclasses.replace(config, density_weight=0.0),
        thresholds=threshold,
    )(ctx.x, ctx.y)
    pred_b, scores_b = detector_scores(ctx.model, ctx.detector, blind.x_adv, 256)
    assert ((pred_b != ctx.y) & (scores_b <= threshold)).sum() < through.sum()


def test_apgd_wb_refuses_a_start_outside_the_ball():
    from robustctl.errors import ConfigError

    with pytest.raises(ConfigError, match="attack.start"):
        ApgdWbConfig(start="other_class")


def test_rejection_counts_by_hand():
    """10 points: 2 misclassified, 1 clean image rejected, 2 broken through by the ensemble's own
    examples, 1 by APGD-wb, 4 defended: with the detector 7/10 correct, 5/10 robust to the blind
    attack, 4/10 to the adaptive one."""
    outcome = ["misclassified"] * 2 + ["clean rejected"] + ["detector-blind"] * 2
    outcome += ["apgd-wb"] + ["defended"] * 4
    result = RejectionResult(outcome, 1.5, 100, 0.05, attacked=5, passes=505, seconds=1.0)
    m = result.metrics()
    assert m[key(keys.WITH_DETECTOR, keys.CLEAN_ACCURACY_METRIC)] == 0.7
    assert m[key(keys.DETECTOR_BLIND, keys.ROBUST_ACCURACY)] == 0.5
    assert m[key(keys.APGD_WB, keys.ROBUST_ACCURACY)] == 0.4
    assert m[key(keys.APGD_WB, keys.BROKEN)] == 1
    assert m[key(keys.APGD_WB, keys.PASSES_PER_POINT)] == 101
    assert m[key(keys.WITH_DETECTOR, keys.THRESHOLD)] == 1.5
    low, high = (
        m[keys.ci_low(key(keys.APGD_WB, keys.ROBUST_ACCURACY))],
        m[keys.ci_high(key(keys.APGD_WB, keys.ROBUST_ACCURACY))],
    )
    assert low < 0.4 < high
    assert result.tag() == "1.5 at fpr 0.05 on 100 clean validation images"


@pytest.mark.parametrize(
    ("fields", "name"),
    [({"fpr": 0.0}, "fpr"), ({"steps": 0}, "steps"), ({"toward": "x"}, "toward")],
)
def test_rejection_settings_are_checked(fields, name):
    from robustctl.errors import ConfigError

    with pytest.raises(ConfigError, match=f"threat_model.robust.rejection.{name}"):
        RejectionConfig(**fields)
