"""Distillation proxy: the loss by hand, and a proxy that agrees with its target well above
chance."""

from __future__ import annotations

import math

import pytest
import torch

from robustctl.composition import compose
from robustctl.data import load_dataset
from robustctl.models import ResNetConfig
from robustctl.threat_models.distill import distill, distillation_loss, distillation_targets
from robustctl.training import fit


def test_soft_distillation_loss_by_hand():
    logits = torch.tensor([[0.0, math.log(3.0)]])  # softmax at T=1: [1/4, 3/4]
    targets = torch.tensor([[0.5, 0.5]])
    expected = -(0.5 * math.log(0.25) + 0.5 * math.log(0.75))
    assert distillation_loss(logits, targets, "soft", 1.0).item() == pytest.approx(
        expected, rel=1e-6
    )
    # at T=2 the logits are halved and the loss scaled by T^2 = 4
    p = torch.softmax(logits / 2, 1)[0]
    expected_t2 = -4 * (0.5 * math.log(p[0]) + 0.5 * math.log(p[1]))
    assert distillation_loss(logits, targets, "soft", 2.0).item() == pytest.approx(
        expected_t2, rel=1e-6
    )


def test_targets_follow_the_prediction_view():
    class Fixed(torch.nn.Module):
        num_classes, embedding_dim = 2, 1
        logit_sign = torch.tensor(-1.0)

        def embed(self, x):
            return x.flatten(1)[:, :1]

        def head(self, z):
            return torch.cat([z, -z], 1)

        def parameters(self):
            return iter([torch.zeros(1)])

    x = torch.tensor([[[[1.0]]], [[[-1.0]]]])
    # raw logits [1, -1] -> predicted (negated) [-1, 1]: class 1 for the first input
    assert distillation_targets(Fixed(), x, "hard", 1.0).tolist() == [1, 0]


def test_proxy_agrees_with_its_target_well_above_chance(tiny):
    _, cfg = compose([*tiny, "trainer.epochs=3"])
    data = load_dataset(cfg.dataset, cfg.work_dir)
    target = fit(cfg, data, chash="target").model
    result = distill(
        target,
        data,
        ResNetConfig(name="resnet20", depth=20),
        epochs=10,
        batch_size=32,
        temperature=2.0,
        seed=0,
    )
    chance = 1 / data.num_classes
    assert result.agreement >= chance + 0.4, result


def test_soft_labels_describe_the_augmented_batch_trained_on(tiny, monkeypatch):
    """With augmentation on, each step's soft labels come from the target's view of the very
    (cropped, flipped) batch the proxy trains on, not of the un-augmented image."""
    import robustctl.threat_models.distill as distill_module

    _, cfg = compose([*tiny, "trainer.epochs=1", "dataset.augment=true"])
    data = load_dataset(cfg.dataset, cfg.work_dir)
    assert data.augment
    target = fit(cfg, data, chash="target-aug").model
    queried, trained = [], []
    real_targets, real_loss = distill_module.distillation_targets, distill_module.distillation_loss

    def spy_targets(model, x, mode, temperature):
        queried.append(x.detach().clone())
        return real_targets(model, x, mode, temperature)

    def spy_loss(proxy_logits, targets, mode, temperature):
        trained.append(targets.detach().clone())
        return real_loss(proxy_logits, targets, mode, temperature)

    monkeypatch.setattr(distill_module, "distillation_targets", spy_targets)
    monkeypatch.setattr(distill_module, "distillation_loss", spy_loss)
    distill(target, data, ResNetConfig(name="resnet20", depth=20), epochs=1, batch_size=64)
    assert len(queried) == len(trained) == math.ceil(len(data.y_train) / 64)
    # the batches were augmented: none equals the same number of un-augmented training images
    originals = {tuple(x.flatten().tolist()) for x in data.x_train}
    first = queried[0]
    assert sum(tuple(x.flatten().tolist()) in originals for x in first) < len(first)
    # and each step's soft labels are the target's softmax on exactly that batch (T = 4)
    with torch.no_grad():
        expected = torch.softmax(target.eval().predict_logits(first) / 4.0, 1)
    assert torch.allclose(trained[0], expected, atol=1e-5)
