"""The clean stage and every threat-model stage with the target model on a second device (the
fake accelerator of ``tests/fake_accelerator.py``): the clean stage, the context, the gray-box,
white-box and black-box stages run without a cross-device operation and report the same metrics
as on the CPU."""

from __future__ import annotations

import copy

import pytest

from robustctl import metric_keys as keys
from robustctl.evaluation.clean_stage import clean_stage
from robustctl.inference import model_device
from robustctl.threat_models import STAGES, prepare
from tests.fake_accelerator import ACCEL, FakeAccelerator


def stage_metrics(cfg, model, data):
    ctx = prepare(cfg, model, data)
    assert ctx.detector.points.device == model_device(model)
    return {stage: timeless(STAGES[stage].run(ctx).metrics) for stage in cfg.threat_model.stages}


def timeless(metrics):
    return {k: v for k, v in metrics.items() if not k.endswith("seconds")}


@pytest.fixture(scope="module")
def both(target):
    cfg, model, data = target
    cfg = copy.deepcopy(cfg)
    cfg.threat_model.whitebox.steps = 30  # the same code paths on a smaller budget
    cfg.threat_model.fmn_wb.steps = 20
    cfg.threat_model.blackbox.epochs = 1
    with FakeAccelerator():
        accel = stage_metrics(cfg, copy.deepcopy(model).to(ACCEL), data)
    return stage_metrics(cfg, model, data), accel


@pytest.mark.slow  # `both` runs the three stages twice: over ~10 s
@pytest.mark.parametrize("stage", [keys.GRAYBOX, keys.WHITEBOX, keys.BLACKBOX])
def test_each_stage_reports_the_cpu_numbers_from_the_device(both, stage):
    cpu, accel = both
    assert accel[stage] == pytest.approx(cpu[stage], rel=0, abs=0, nan_ok=True)  # exactly equal
    assert any(v == v for v in cpu[stage].values())  # not all NaN


def test_the_clean_stage_reports_the_cpu_numbers_from_the_device(target):
    """Clean accuracy, the embedding diagnostics (input gradients, Jacobian projections) and the
    confusion matrix with the model on the device."""
    cfg, model, data = target
    cpu = clean_stage(cfg, model, data, "ce")
    with FakeAccelerator():
        accel = clean_stage(cfg, copy.deepcopy(model).to(ACCEL), data, "ce")
    assert accel.metrics == pytest.approx(cpu.metrics, rel=0, abs=0, nan_ok=True)
    assert (
        accel.documents["metrics.json"]["confusion_matrix"]
        == (cpu.documents["metrics.json"]["confusion_matrix"])
    )
