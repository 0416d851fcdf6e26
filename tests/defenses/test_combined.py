"""CombinedDetector: the regression against scikit-learn on the same standardized features, the
fit's use of validation images only, and kde_bu end to end on a tiny ResNet. The Newton solver
itself is tested in tests/defenses/test_regression.py; the config checks and the state_dict round
trip shared with LID and Mahalanobis in tests/defenses/test_adversarial_fit.py."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression

from robustctl.data.base import ImageData
from robustctl.defenses.base import Detector, FitInputs, Probe, score_images
from robustctl.defenses.combined import (
    CombinedConfig,
    CombinedDetector,
    KDEBUConfig,
    KDEBUDetector,
    default_member_factory,
)
from robustctl.defenses.kde import KDEDetector
from robustctl.defenses.uncertainty import BUDetector
from robustctl.errors import ConfigError
from robustctl.inference import ModelOutputs, predict_labels
from robustctl.models import ResNet


class Stub(Detector):
    """A member whose score is a given function of the probe; records what it saw."""

    config_type = dict

    def __init__(self, fn, layers: tuple[str, ...] = (), reads_images: bool = False) -> None:
        super().__init__()
        self.fn, self.layers, self.reads_images = fn, layers, reads_images
        self.register_buffer("scale", torch.ones(()))
        self.fit_calls: list[FitInputs] = []
        self.seen: list[torch.Tensor] = []

    def fit_on(self, inputs: FitInputs) -> Stub:
        self.fit_calls.append(inputs)
        return self

    def score_probe(self, probe: Probe, classes: torch.Tensor) -> torch.Tensor:
        self.seen.append(probe.x.detach().cpu().clone())
        return self.fn(probe) * self.scale

    def metrics(self) -> dict[str, float]:
        return {"stub/calls": float(len(self.fit_calls))}


def brightness(probe: Probe) -> torch.Tensor:
    return probe.x.mean((1, 2, 3))


def confidence(probe: Probe) -> torch.Tensor:
    return torch.softmax(probe.logits, 1).amax(1)


def tiny_model() -> ResNet:
    torch.manual_seed(0)
    return ResNet(depth=8, num_classes=3, in_channels=1, width=2).eval()


def tiny_data(model: ResNet, n_train: int = 45, n_val: int = 60, n_test: int = 20) -> ImageData:
    """Random images; training labels cycle through the classes (KDE keeps points of each);
    validation and test labels are the model's predictions (every clean image correctly
    classified, so the successful pairs are the ones whose attack flipped the prediction)."""
    g = torch.Generator().manual_seed(7)
    x_train, x_val, x_test = (torch.rand(n, 1, 8, 8, generator=g) for n in (n_train, n_val, n_test))
    return ImageData(
        "tiny",
        x_train,
        torch.arange(n_train) % 3,
        x_val,
        predict_labels(model, x_val),
        x_test,
        predict_labels(model, x_test),
        ("a", "b", "c"),
    )


class Recorder:
    """``craft`` for FitInputs: FGSM against the model, recording every call."""

    def __init__(self, model: ResNet) -> None:
        self.model = model
        self.calls: list[tuple[str, dict[str, Any], torch.Tensor, torch.Tensor]] = []

    def __call__(self, attack: str, params: dict[str, Any], x: torch.Tensor, y: torch.Tensor):
        self.calls.append((attack, dict(params), x.clone(), y.clone()))
        assert attack == "fgsm"
        x = x.clone().requires_grad_(True)
        loss = F.cross_entropy(self.model.predict_logits(x), y)
        (grad,) = torch.autograd.grad(loss, x)
        return (x + params["eps"] * grad.sign()).clamp(0, 1).detach()


def rows_in(rows: torch.Tensor, pool: torch.Tensor) -> torch.Tensor:
    """[len(rows)] whether each image of ``rows`` equals some image of ``pool`` exactly."""
    a, b = rows.flatten(1), pool.flatten(1)
    return (a[:, None, :] == b[None, :, :]).all(-1).any(1)


def stub_factory(members: dict[str, Stub]):
    return lambda name: members[name]


# ------------------------------------------------------------------------------ regression
def test_regression_matches_sklearn_and_touches_validation_images_only() -> None:
    model = tiny_model()
    data = tiny_data(model)
    craft = Recorder(model)
    inputs = FitInputs(model, data, ModelOutputs(model, data, 64), batch_size=32, craft=craft)
    members = {"bright": Stub(brightness), "conf": Stub(confidence, layers=("stage1",))}
    det = CombinedDetector(
        members=["bright", "conf"],
        fit_samples=50,
        fit_attack_params={"eps": 0.3},
        lr_c=0.7,
        seed=3,
        member_factory=stub_factory(members),
    ).fit_on(inputs)

    # members fitted on the inputs themselves; one craft call on 50 validation images
    assert all(m.fit_calls == [inputs] for m in members.values())
    ((attack, params, clean, y),) = craft.calls
    assert attack == "fgsm" and params == {"eps": 0.3} and len(clean) == 50
    assert rows_in(clean, data.x_val).all()
    assert not rows_in(clean, torch.cat([data.x_train, data.x_test])).any()
    # successful pairs only (clean images are all correct)
    adv = craft(attack, params, clean, y)
    flipped = (predict_labels(model, adv) != y).numpy()
    assert 10 <= flipped.sum() < 50  # the filter is exercised
    assert float(det.combiner.train_examples) == 2 * flipped.sum()
    # members scored, for the fit, only the kept validation images and their adversarial examples
    kept = torch.from_numpy(flipped)
    for m in members.values():
        seen = torch.cat(m.seen)
        assert len(seen) == 2 * flipped.sum()
        assert rows_in(seen, torch.cat([clean[kept], adv[kept]])).all()
        assert not rows_in(seen, torch.cat([data.x_train, data.x_test])).any()

    # the features, computed directly
    with torch.no_grad():
        feats = [
            torch.stack([brightness(p), confidence(p)], 1).double().numpy()
            for p in (Probe(model, clean), Probe(model, adv))
        ]
    x_fit = np.concatenate([feats[0][flipped], feats[1][flipped]])
    y_fit = np.r_[np.zeros(flipped.sum()), np.ones(flipped.sum())]
    mu, sd = x_fit.mean(0), x_fit.std(0)
    sk = LogisticRegression(C=0.7, tol=1e-12, max_iter=10_000).fit((x_fit - mu) / sd, y_fit)
    np.testing.assert_allclose(det.combiner.mean.numpy(), mu, rtol=1e-6)
    np.testing.assert_allclose(det.combiner.scale.numpy(), sd, rtol=1e-5)
    np.testing.assert_allclose(det.combiner.weight.numpy(), sk.coef_[0], rtol=1e-5, atol=1e-7)
    assert float(det.combiner.bias) == pytest.approx(sk.intercept_[0], rel=1e-5, abs=1e-7)
    assert np.abs(sk.coef_[0]).min() > 1e-3  # both members carry weight

    # the score on new (test) images is sklearn's decision function on the standardized scores
    with torch.no_grad():
        probe = Probe(model, data.x_test, det.layers)
        got = det.score_probe(probe, probe.predictions).double().numpy()
        s_test = torch.stack([brightness(probe), confidence(probe)], 1).double().numpy()
    np.testing.assert_allclose(got, sk.decision_function((s_test - mu) / sd), rtol=1e-5, atol=1e-5)

    metrics = det.metrics()
    assert metrics["combined/weight_bright"] == pytest.approx(sk.coef_[0][0], rel=1e-5, abs=1e-7)
    assert metrics["combined/weight_conf"] == pytest.approx(sk.coef_[0][1], rel=1e-5, abs=1e-7)
    assert metrics["combined/lr_val_accuracy"] == pytest.approx(sk.score((x_fit - mu) / sd, y_fit))
    assert metrics["combined/fit_pairs"] == flipped.sum() and metrics["stub/calls"] == 1.0
    assert det.caveats() == {}


def test_failed_attacks_fall_back_to_all_pairs_with_a_caveat() -> None:
    model = tiny_model()
    data = tiny_data(model)
    inputs = FitInputs(
        model, data, ModelOutputs(model, data, 64), craft=lambda a, p, x, y: x.clone()
    )
    members = {"bright": Stub(brightness), "conf": Stub(confidence)}
    det = CombinedDetector(
        members=["bright", "conf"], fit_samples=20, member_factory=stub_factory(members)
    ).fit_on(inputs)
    assert det.metrics()["combined/fit_pairs"] == 20 and "combined/fit_pairs" in det.caveats()
    value, text = det.caveats()["combined/fit_pairs"]
    assert value == "all" and "only 0 of 20 validation pairs" in text
    # identical clean and "adversarial" features: nothing to learn, the penalty keeps w at 0
    torch.testing.assert_close(
        det.combiner.weight, torch.zeros(2, dtype=torch.float64), atol=1e-9, rtol=0
    )
    assert abs(float(det.combiner.bias)) < 1e-9
    assert det.metrics()["combined/lr_val_accuracy"] == 0.5
    everything = CombinedDetector(
        members=["bright", "conf"],
        fit_samples=20,
        successful_only=False,
        member_factory=stub_factory({"bright": Stub(brightness), "conf": Stub(confidence)}),
    ).fit_on(inputs)
    assert everything.metrics()["combined/fit_pairs"] == 20 and everything.caveats() == {}


# ---------------------------------------------------------------------------- construction
def test_members_are_submodules_and_layers_are_their_union() -> None:
    members = {
        "a": Stub(brightness, layers=("stage1",)),
        "b": Stub(confidence, layers=("stage2", "stage1"), reads_images=True),
    }
    det = CombinedDetector(members=["a", "b"], member_factory=stub_factory(members))
    assert det.layers == ("stage1", "stage2") and det.reads_images and det.needs_forward
    assert dict(det.members) == members
    # .to converts the members and the regression's own buffers alike
    det = det.to(torch.float16)
    assert members["a"].scale.dtype == torch.float16
    assert det.combiner.weight.dtype == det.combiner.bias.dtype == torch.float16
    plain = CombinedDetector(members=["a"], member_factory=stub_factory({"a": Stub(brightness)}))
    assert plain.layers == () and not plain.reads_images and not plain.needs_forward
    with pytest.raises(RuntimeError, match="not fitted"):
        plain.score_probe(Probe(tiny_model(), torch.rand(2, 1, 8, 8)), torch.zeros(2))


def test_configs_and_the_default_factory(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = CombinedConfig()
    assert (cfg.name, cfg.members, cfg.fit_attack, cfg.fit_attack_params) == (
        "combined",
        ["kde", "bu"],
        "fgsm",
        {"eps": 0.1},
    )
    assert KDEBUConfig().name == "kde_bu" and KDEBUConfig().members == ["kde", "bu"]
    assert KDEBUDetector.config_type is KDEBUConfig and issubclass(KDEBUDetector, CombinedDetector)
    for bad, key in (
        ({"members": []}, "members"),
        ({"members": ["kde", "kde"]}, "members"),
    ):
        with pytest.raises(ConfigError, match=rf"defense\.{key}"):
            CombinedConfig(**bad)
    assert isinstance(default_member_factory("kde"), KDEDetector)
    bu = default_member_factory("bu")
    assert isinstance(bu, BUDetector) and bu.samples == 50
    for name in ("none", "no_such_detector"):
        with pytest.raises(ConfigError, match="defense.members"):
            default_member_factory(name)


# ------------------------------------------------------------------------------ end to end
def test_kde_bu_end_to_end(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model()
    data = tiny_data(model)
    craft = Recorder(model)
    inputs = FitInputs(model, data, ModelOutputs(model, data, 64), craft=craft)
    det = KDEBUDetector(KDEBUConfig(fit_attack_params={"eps": 0.2}, lr_c=10.0))
    det.fit_on(inputs)
    assert isinstance(det.members["kde"], KDEDetector)
    assert isinstance(det.members["bu"], BUDetector)
    assert det.layers == () and not det.reads_images
    ((_, params, clean, _),) = craft.calls
    assert params == {"eps": 0.2} and len(clean) == len(data.x_val)  # all 60 (< 1000)
    assert rows_in(clean, data.x_val).all()
    assert det.metrics()["combined/fit_pairs"] >= 10
    assert det.caveats().keys() <= {"kde/bandwidth_at_grid_edge"}

    preds, scores = score_images(det, model, data.x_test, batch_size=8)
    assert torch.equal(preds, predict_labels(model, data.x_test))
    assert scores.shape == (20,) and torch.isfinite(scores).all() and scores.std() > 0
    # the score is w . (s - mu) / sd + b of the members' own scores
    member = torch.stack(
        [score_images(det.members[m], model, data.x_test)[1].double() for m in ("kde", "bu")], 1
    )
    lr = det.combiner
    want = ((member - lr.mean) / lr.scale) @ lr.weight + lr.bias
    torch.testing.assert_close(scores.double(), want, rtol=1e-5, atol=1e-5)

    metrics = det.metrics()
    for key in ("kde/bandwidth", "bu/val_uncertainty", "combined/weight_kde", "combined/weight_bu"):
        assert np.isfinite(metrics[key])
    assert 0.5 <= metrics["combined/lr_val_accuracy"] <= 1.0

    # white-box: the score is differentiable w.r.t. the images
    x = data.x_test[:4].clone().requires_grad_(True)
    probe = Probe(model, x, det.layers)
    det.score_probe(probe, probe.predictions).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


class BoundedStub(Stub):
    """A member whose bound is its score + 10 (so a test can tell which one was used)."""

    def score_bound(self, probe: Probe, toward: torch.Tensor) -> torch.Tensor:
        return self.score_probe(probe, toward) + 10.0


def test_the_attack_bound_replaces_only_members_of_nonnegative_weight() -> None:
    """A member the regression reads the other way round (negative weight) keeps its score in
    the attack's bound: its own upper bound would push the combination the wrong way."""
    model = tiny_model()
    data = tiny_data(model)
    inputs = FitInputs(model, data, ModelOutputs(model, data, 64), 32, craft=Recorder(model))
    members = {"bright": BoundedStub(brightness), "conf": BoundedStub(confidence)}
    det = CombinedDetector(
        members=["bright", "conf"], fit_samples=40, member_factory=stub_factory(members)
    ).fit_on(inputs)
    state = det.state_dict()
    state["combiner.weight"] = torch.tensor([0.5, -0.25], dtype=torch.float64)
    det.load_state_dict(state)  # the signs are read back from the saved weights
    probe = Probe(model, data.x_test[:6])
    toward = torch.zeros(6, dtype=torch.long)
    s = torch.stack([brightness(probe) + 10.0, confidence(probe)], 1).double()
    lr = det.combiner
    want = ((s - lr.mean) / lr.scale) @ lr.weight + lr.bias
    torch.testing.assert_close(det.score_bound(probe, toward).double(), want)
    assert (det.score_bound(probe, toward) >= det.score_probe(probe, toward)).all()


def test_held_training_rows_are_the_members_together() -> None:
    """A combined detector holds the reference rows of every member (LID's), each once; a
    detector that holds none reports an empty long tensor."""
    from robustctl.defenses.lid import LIDDetector

    det = CombinedDetector(members=["lid", "kde"])
    assert det.members["kde"].held_training_rows().dtype == torch.long
    assert det.held_training_rows().numel() == 0
    lid = det.members["lid"]
    assert isinstance(lid, LIDDetector)
    lid.set_reference({name: torch.randn(25, 3) for name in lid.layers}, torch.arange(30, 5, -1))
    assert det.held_training_rows().tolist() == list(range(6, 31))
