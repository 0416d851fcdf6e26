"""What the detectors fitted on adversarial examples share (``lid``, ``mahalanobis``, ``combined``
and ``kde_bu``), tested once over all of them: the AdversarialFitConfig fields and their checks,
the layer checks, the unfitted error, the fit set of crafted_pairs when a split has no images, and
a state_dict round trip that gives a fresh detector the same metrics and bit-identical scores and
attack surrogates. Each detector's own fields are tested in its own file."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from robustctl.data.base import ImageData
from robustctl.defenses.base import FitInputs, Probe, crafted_pairs, score_images
from robustctl.defenses.combined import (
    CombinedConfig,
    CombinedDetector,
    KDEBUConfig,
    KDEBUDetector,
)
from robustctl.defenses.lid import LIDConfig, LIDDetector
from robustctl.defenses.mahalanobis import MahalanobisConfig, MahalanobisDetector
from robustctl.errors import ConfigError
from robustctl.inference import ModelOutputs
from tests.defenses.test_combined import Stub, brightness
from tests.defenses.test_mahalanobis import tiny_inputs

FIT_CONFIGS = [LIDConfig, MahalanobisConfig, CombinedConfig, KDEBUConfig]
LAYER_DETECTORS = [LIDDetector, MahalanobisDetector]


@pytest.mark.parametrize("config_type", FIT_CONFIGS, ids=lambda c: c.__name__)
def test_fit_fields_defaults_and_errors(config_type: type) -> None:
    cfg = config_type()
    assert (cfg.fit_attack, cfg.fit_attack_params, cfg.fit_samples) == ("fgsm", {"eps": 0.1}, 1000)
    assert (cfg.successful_only, cfg.lr_c, cfg.seed) == (True, 1.0, 0)
    for bad, key in [
        ({"fit_samples": 0}, "fit_samples"),
        ({"fit_samples": 1}, "fit_samples"),
        ({"lr_c": 0.0}, "lr_c"),
        ({"lr_c": float("inf")}, "lr_c"),
        ({"fit_attack": "nope"}, "fit_attack"),
        ({"fit_attack_params": {"eps": -1.0}}, "fit_attack_params"),
        ({"fit_attack_params": {"steps": 3}}, "fit_attack_params"),
    ]:
        with pytest.raises(ConfigError, match=rf"defense\.{key}"):
            config_type(**bad)


@pytest.mark.parametrize("detector_type", LAYER_DETECTORS, ids=lambda d: d.__name__)
def test_layer_checks(detector_type: type) -> None:
    config_type = detector_type.config_type
    for bad in ([], ["embedding", "embedding"], [3]):
        with pytest.raises(ConfigError, match=r"defense\.layers"):
            config_type(layers=bad)
    _, inputs = tiny_inputs()
    for unknown in (["stage9"], ["embedding", "logits"]):
        with pytest.raises(ConfigError, match="unknown layer"):
            detector_type(layers=unknown).fit_on(inputs)


@pytest.mark.parametrize(
    "detector_type", [*LAYER_DETECTORS, CombinedDetector], ids=lambda d: d.__name__
)
def test_unfitted_detectors_refuse_to_report_or_score(detector_type: type) -> None:
    det = detector_type()
    assert not det.fitted
    with pytest.raises(RuntimeError, match="not fitted"):
        det.metrics()
    model, _ = tiny_inputs()
    probe = Probe(model, torch.rand(2, 1, 8, 8), det.layers)
    for score in (det.score_probe, det.attack_score):
        with pytest.raises(RuntimeError, match="not fitted"):
            score(probe, probe.predictions)


def test_crafted_pairs_refuses_a_split_without_images() -> None:
    model, inputs = tiny_inputs()
    crafted: list[Any] = []
    data = inputs.data
    no_val = ImageData(
        "tiny",
        data.x_train,
        data.y_train,
        data.x_val[:0],
        data.y_val[:0],
        data.x_test,
        data.y_test,
        data.class_names,
    )
    empty = FitInputs(
        model,
        no_val,
        ModelOutputs(model, no_val, 128),
        craft=lambda *args: crafted.append(args),  # never called: nothing to craft
    )
    with pytest.raises(ConfigError, match=r"validation images; there are none.*val_fraction"):
        crafted_pairs(empty, CombinedConfig(), "val")
    # the combined detector's fit says so (its members are fitted on the training split first)
    det = CombinedDetector(members=["bright"], member_factory=lambda name: Stub(brightness))
    with pytest.raises(ConfigError, match=r"defense=combined: .*val_fraction"):
        det.fit_on(empty)
    assert crafted == []
    # a split that has images: the fit set on the CPU, all pairs without the filter
    clean, adv, y, fallback = crafted_pairs(
        inputs, MahalanobisConfig(fit_samples=12, successful_only=False), "train"
    )
    assert clean.shape == adv.shape == (12, 1, 8, 8) and y.shape == (12,) and fallback is None
    assert not torch.equal(clean, adv)


ROUNDTRIPS = {  # detector, config, state keys it must save, its metrics' prefix
    "lid": (
        LIDDetector,
        LIDConfig(layers=["stage2", "embedding"], k=5, reference_size=20, fit_samples=40),
        {"reference_stage2", "reference_embedding", "reference_rows"},
        "lid/",
    ),
    "mahalanobis": (
        MahalanobisDetector,
        MahalanobisConfig(layers=["stage2", "embedding"], fit_samples=40),
        {
            "means_stage2",
            "precision_stage2",
            "means_embedding",
            "precision_embedding",
            "ranks",
            "class_labels",
        },
        "mahalanobis/",
    ),
    "kde_bu": (KDEBUDetector, KDEBUConfig(fit_samples=40), {"members.kde.points"}, "combined/"),
}
COMBINER_KEYS = {"combiner.weight", "combiner.bias", "combiner.mean", "combiner.scale"}


@pytest.mark.parametrize("name", sorted(ROUNDTRIPS))
def test_state_dict_roundtrip(name: str) -> None:
    detector_type, cfg, keys, prefix = ROUNDTRIPS[name]
    cfg.successful_only = False  # every pair: the tiny model's attacks need not succeed
    model, inputs = tiny_inputs()
    det = detector_type(cfg).fit_on(inputs)
    state = det.state_dict()
    assert keys | COMBINER_KEYS <= set(state)
    assert all(state[k].dtype == torch.float64 for k in COMBINER_KEYS)
    fresh = detector_type(cfg)
    assert not fresh.fitted
    fresh.load_state_dict(state)
    assert fresh.fitted

    def own(metrics: dict[str, float]) -> dict[str, float]:
        return {k: v for k, v in metrics.items() if k.startswith(prefix)}

    assert own(fresh.metrics()) == own(det.metrics()) and own(det.metrics())
    x = inputs.data.x_val
    torch.testing.assert_close(
        score_images(fresh, model, x)[1], score_images(det, model, x)[1], rtol=0, atol=0
    )
    # the white-box surrogate too (the combined detector's weight signs are read at load)
    with torch.no_grad():
        probe = Probe(model, x, det.layers)
        toward = (probe.predictions + 1) % 3
        assert torch.equal(fresh.attack_score(probe, toward), det.attack_score(probe, toward))
