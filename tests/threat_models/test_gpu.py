"""Every threat-model stage on a CUDA device (``make test-gpu``; skipped without one).

The detector lives on the model's device and C&W-wb adds its density term to the model's logits
there; before the device rule the detector's kernel points stayed on the CPU and the white-box
and black-box stages failed with a cross-device addition. The numbers must match the same stages
on the CPU up to float round-off of the attack.
"""

from __future__ import annotations

import copy

import pytest

from robustctl import metric_keys as keys
from robustctl.inference import model_device
from robustctl.threat_models import blackbox, prepare, whitebox

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def on_cuda(target):
    cfg, model, data = target
    gpu_model = copy.deepcopy(model).to("cuda")
    return cfg, gpu_model, data, prepare(cfg, gpu_model, data)


def test_the_detector_lives_on_the_models_device(on_cuda):
    _, model, _, ctx = on_cuda
    assert model_device(model).type == "cuda"
    assert ctx.detector.points.device.type == "cuda"
    assert ctx.clean_scores.device.type == "cpu"  # results cross to the CPU at the boundary


def test_whitebox_runs_on_cuda_and_agrees_with_the_cpu(on_cuda, target):
    cfg, model, data = target
    gpu = whitebox.run(on_cuda[3]).metrics
    cpu = whitebox.run(prepare(cfg, model, data)).metrics
    assert gpu[keys.whitebox(keys.PAIRS)] > 0
    assert gpu[keys.whitebox(keys.SUCCESS_RATE)] == pytest.approx(
        cpu[keys.whitebox(keys.SUCCESS_RATE)], abs=0.1
    )


def test_blackbox_runs_on_cuda(on_cuda):
    metrics = blackbox.run(on_cuda[3]).metrics
    assert 0.0 <= metrics[keys.BLACKBOX_PROXY_AGREEMENT] <= 1.0
    assert metrics[keys.BLACKBOX_PROXY_SUCCESS_RATE] > 0  # the proxy attack ran on the device
