"""ResNet 6n+2: depth, shapes, embedding, and the prediction view."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustctl.models import ResNet, ResNetConfig, build_model


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
    leaky = build_model(ResNetConfig(), num_classes=10, in_channels=1)
    acts = [m for m in leaky.modules() if isinstance(m, nn.LeakyReLU)]
    assert acts and all(a.negative_slope == 0.1 for a in acts)
    relu = build_model(ResNetConfig(activation="relu"), num_classes=10, in_channels=1)
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


# ------------------------------------------------------------------------------ model.norm
def norm_layers(model: nn.Module) -> dict[str, int]:
    kinds = {"batch": nn.BatchNorm2d, "group": nn.GroupNorm}
    return {k: sum(isinstance(m, t) for m in model.modules()) for k, t in kinds.items()}


@pytest.mark.parametrize(
    ("norm", "batch", "group"), [("batch", 21, 0), ("group", 0, 21), ("none", 0, 0)]
)
def test_norm_switch_puts_that_layer_after_every_convolution(norm, batch, group):
    """ResNet-20: 19 3x3 convolutions and two 1x1 shortcut convolutions, each followed by one norm
    layer; with none, the convolutions get a bias instead."""
    model = build_model(ResNetConfig(norm=norm, norm_groups=4), num_classes=10, in_channels=1)
    assert norm_layers(model) == {"batch": batch, "group": group}
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 21 and all((c.bias is not None) == (norm == "none") for c in convs)
    if norm == "group":
        assert all(m.num_groups == 4 for m in model.modules() if isinstance(m, nn.GroupNorm))


@pytest.mark.parametrize("norm", ["group", "none"])
def test_without_batch_norm_an_image_does_not_depend_on_its_batch_in_training_mode(norm):
    torch.manual_seed(0)
    x = torch.rand(6, 1, 8, 8)
    for kind, depends in ((norm, False), ("batch", True)):
        model = build_model(ResNetConfig(norm=kind), num_classes=4, in_channels=1).train()
        alone, together = model(x[:1]).logits, model(x).logits[:1]
        assert torch.allclose(alone, together, atol=1e-5) is not depends


def test_norm_options_are_checked():
    from robustctl.composition import compose
    from robustctl.errors import ConfigError

    with pytest.raises(ConfigError, match=r"model\.norm"):
        compose(["model.norm=layer"])
    with pytest.raises(ConfigError, match=r"model\.norm_groups"):
        compose(["model.norm=group", "model.norm_groups=5"])  # 5 does not divide 16
    assert (
        compose(["model.norm=group", "model.norm_groups=5", "model.width=20"])[1].model.norm
        == "group"
    )


def test_a_checkpoint_rebuilds_its_norm_and_an_older_one_means_batch():
    from robustctl.training.checkpoint import model_from_checkpoint

    torch.manual_seed(0)
    cfg = ResNetConfig(norm="group", norm_groups=4)
    model = build_model(cfg, num_classes=3, in_channels=1).eval()
    meta = {"model": vars(cfg), "num_classes": 3, "in_channels": 1}
    rebuilt = model_from_checkpoint({"meta": meta, "model": model.state_dict()}).eval()
    assert norm_layers(rebuilt)["group"] == 21
    x = torch.rand(4, 1, 8, 8)
    torch.testing.assert_close(rebuilt(x).logits, model(x).logits, rtol=0, atol=0)
    older = {k: v for k, v in vars(ResNetConfig()).items() if k not in ("norm", "norm_groups")}
    plain = build_model(ResNetConfig(), num_classes=3, in_channels=1)
    state = {
        "meta": {"model": older, "num_classes": 3, "in_channels": 1},
        "model": plain.state_dict(),
    }
    assert norm_layers(model_from_checkpoint(state))["batch"] == 21


@pytest.mark.parametrize("norm", ["group", "none"])
def test_a_model_without_batch_norm_trains_and_reloads(norm, tiny):
    """The switch reaches training: the synthetic run learns (above the 25% of chance; at lr 0.02,
    the networks without batch norm do not train at the default 0.1 in 3 epochs), and the
    checkpoint it writes rebuilds the same network."""
    from robustctl.composition import compose
    from robustctl.data import load_dataset
    from robustctl.training import fit, load_checkpoint, model_from_checkpoint

    _, cfg = compose(
        [*tiny, f"model.norm={norm}", "model.norm_groups=4", "trainer.epochs=4", "trainer.lr=0.02"]
    )
    data = load_dataset(cfg.dataset, cfg.work_dir)
    result = fit(cfg, data, chash=f"norm-{norm}")
    assert result.final["val/accuracy"] > 0.5
    rebuilt = model_from_checkpoint(load_checkpoint(result.checkpoint)).eval()
    assert norm_layers(rebuilt) == norm_layers(result.model)
    x = data.x_test[:8]
    torch.testing.assert_close(rebuilt(x).logits, result.model.eval()(x).logits, rtol=0, atol=0)
