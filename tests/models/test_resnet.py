"""ResNet 6n+2: depth, shapes, embedding, and the prediction view."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustctl.config.schema import ModelConfig
from robustctl.models import ResNet, build_model


def count_convs(model: nn.Module) -> int:
    return sum(isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) for m in model.modules())


@pytest.mark.parametrize("depth", [20, 32, 56])
def test_depth_counts_weighted_layers(depth):
    model = ResNet(depth=depth, num_classes=10, in_channels=3)
    # 6n 3x3 convs in blocks + 1 stem conv + 1 linear head = 6n + 2
    assert count_convs(model) + 1 == depth
    assert sum(isinstance(m, nn.Linear) for m in model.modules()) == 1


@pytest.mark.parametrize("shape", [(2, 1, 8, 8), (2, 1, 28, 28), (2, 3, 32, 32)])
def test_forward_returns_logits_and_64d_embedding(shape):
    model = ResNet(depth=20, num_classes=7, in_channels=shape[1]).eval()
    out = model(torch.rand(shape))
    assert out.logits.shape == (2, 7)
    assert out.embedding.shape == (2, 64)
    # the logits are the linear head applied to the embedding, from the same forward pass
    torch.testing.assert_close(out.logits, model.head(out.embedding))


def test_leaky_relu_default_and_relu_option():
    leaky = build_model(ModelConfig(), num_classes=10, in_channels=1)
    acts = [m for m in leaky.modules() if isinstance(m, nn.LeakyReLU)]
    assert acts and all(a.negative_slope == 0.1 for a in acts)
    relu = build_model(ModelConfig(activation="relu"), num_classes=10, in_channels=1)
    assert not any(isinstance(m, nn.LeakyReLU) for m in relu.modules())


def test_prediction_view_applies_logit_sign():
    torch.manual_seed(0)
    model = ResNet(depth=20, num_classes=5, in_channels=1, logit_sign=-1.0).eval()
    x = torch.rand(3, 1, 8, 8)
    raw = model(x).logits
    torch.testing.assert_close(model.predict_logits(x), -raw)
    torch.testing.assert_close(model.prediction_view()(x), -raw)
    assert "logit_sign" in model.state_dict()  # travels with the checkpoint


def test_normalization_lives_inside_the_model():
    model = ResNet(depth=20, num_classes=3, in_channels=1, mean=[0.5], std=[0.25]).eval()
    plain = ResNet(depth=20, num_classes=3, in_channels=1).eval()
    plain.load_state_dict(
        {k: v for k, v in model.state_dict().items() if k not in ("mean", "std")}, strict=False
    )
    x = torch.rand(2, 1, 8, 8)
    torch.testing.assert_close(model.embed(x), plain.embed((x - 0.5) / 0.25))


def test_bad_depth_is_refused():
    with pytest.raises(ValueError, match="6n\\+2"):
        ResNet(depth=21)
