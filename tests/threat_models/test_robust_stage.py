"""The robust stage (robustctl/threat_models/robust.py) on the tiny synthetic target: its numbers
are consistent with each other and with the per-point record it logs, every flag is reported, and it
reports the same numbers with the model on the fake accelerator."""

from __future__ import annotations

import copy
import dataclasses

import pytest

from robustctl import metric_keys as keys
from robustctl.composition import compose
from robustctl.evaluation.robust_accuracy import EnsembleConfig
from robustctl.threat_models import STAGES, prepare
from robustctl.threat_models import robust as robust_stage
from tests.fake_accelerator import ACCEL, FakeAccelerator

SMALL = {
    "apgd-ce": {"steps": 10},
    "apgd-t": {"steps": 10, "n_target_classes": 2},
    "fab-t": {"steps": 10, "n_target_classes": 2},
    "square": {"queries": 100},
}


def robust_cfg(cfg, eps=0.05):
    tm = dataclasses.replace(
        cfg.threat_model,
        stages=["robust"],
        num_samples=30,
        robust=EnsembleConfig(eps=eps, members=SMALL),
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
