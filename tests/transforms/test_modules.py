"""The transform modules the model puts in front of the network: their values are the pure
functions', BPDA passes the identity Jacobian, ``gradient=exact`` passes what autograd of the
implementation gives (zero through rounding and thresholds), the registry builds every option,
checkpoints rebuild them, and bad values are refused with the key named."""

from __future__ import annotations

import pytest
import torch

from robustctl.errors import ConfigError
from robustctl.models import ResNet
from robustctl.transforms import (
    OPTIONS,
    build_transform,
    transform_configs,
    transform_from_meta,
    transform_meta,
)
from robustctl.transforms.bit_depth import BitDepth, bit_depth
from robustctl.transforms.edges import Edges, sobel_edges, sobel_magnitude
from robustctl.transforms.jpeg import JPEG, jpeg_compress
from robustctl.transforms.lowpass import Lowpass, lowpass
from robustctl.transforms.median import Median, median_smooth

# (module class, its parameters, the pure function with the same parameters)
CASES = {
    "jpeg": (JPEG, {"quality": 40}, lambda x: jpeg_compress(x, 40)),
    "bit_depth": (BitDepth, {"bits": 2}, lambda x: bit_depth(x, 2)),
    "median": (Median, {"size": 3}, lambda x: median_smooth(x, 3)),
    "lowpass": (Lowpass, {"keep": 0.4}, lambda x: lowpass(x, 0.4)),
    "edges": (Edges, {"threshold": 0.3}, lambda x: sobel_edges(x, 0.3)),
}
# transforms whose implementation has a zero derivative almost everywhere (rounding, thresholds)
STEP_FUNCTIONS = ("jpeg", "bit_depth", "edges")


def images(seed: int = 0, channels: int = 3) -> torch.Tensor:
    return torch.rand(4, channels, 16, 16, generator=torch.Generator().manual_seed(seed))


def test_every_option_is_registered_with_its_config():
    assert set(CASES) | {"none"} == set(OPTIONS) == set(transform_configs())
    for name, (cls, _, _) in CASES.items():
        assert OPTIONS.implementation(name) is cls and transform_configs()[name].name == name


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("gradient", ["bpda", "exact"])
def test_value_is_the_pure_function_whatever_the_gradient(name, gradient):
    cls, params, fn = CASES[name]
    x = images(1)
    module = cls(gradient=gradient, **params)
    expected = fn(x)
    assert not torch.equal(expected, x)  # the transform changes these images
    torch.testing.assert_close(module(x), expected, rtol=0, atol=0)
    torch.testing.assert_close(module(x.clone().requires_grad_()), expected, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["jpeg", "bit_depth"])
def test_bpda_backward_is_the_identity(name):
    cls, params, _ = CASES[name]
    x = images(2).requires_grad_()
    w = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    (cls(**params)(x) * w).sum().backward()
    torch.testing.assert_close(x.grad, w, rtol=0, atol=0)


@pytest.mark.parametrize("name", STEP_FUNCTIONS)
def test_exact_gradient_through_a_step_function_is_zero(name):
    cls, params, _ = CASES[name]
    x = images(4).requires_grad_()
    out = cls(gradient="exact", **params)(x)
    (out * torch.randn_like(out)).sum().backward()
    assert x.grad is not None and torch.count_nonzero(x.grad) == 0


def test_edges_bpda_backward_is_the_soft_threshold():
    """BPDA differentiates sigmoid((m - t) / 0.05), m the normalized Sobel magnitude."""
    x = images(5).requires_grad_()
    w = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    (Edges(threshold=0.3)(x) * w).sum().backward()
    x2 = x.detach().clone().requires_grad_()
    soft = torch.sigmoid((sobel_magnitude(x2) - 0.3) / 0.05).repeat(1, 3, 1, 1)
    (soft * w).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)
    assert torch.count_nonzero(x.grad) > 0


def test_exact_median_gradient_reaches_one_pixel_per_output():
    """d sum(median(x)) / dx counts, for each pixel, the windows whose median it is: integers
    summing to the number of outputs (each output's derivative is 1 on one input pixel)."""
    x = images(5, channels=1).requires_grad_()
    Median(size=3)(x).sum().backward()
    grad = x.grad
    assert torch.equal(grad, grad.round()) and grad.min() >= 0
    assert grad.sum().item() == x.numel()


@pytest.mark.parametrize("name", ["lowpass", "median"])
@pytest.mark.parametrize("gradient", ["bpda", "exact"])
def test_differentiable_transforms_always_pass_their_true_gradient(name, gradient):
    cls, params, fn = CASES[name]
    x = images(6).requires_grad_()
    w = torch.randn(x.shape, generator=torch.Generator().manual_seed(7))
    (cls(gradient=gradient, **params)(x) * w).sum().backward()
    x2 = x.detach().clone().requires_grad_()
    (fn(x2) * w).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=0, atol=0)
    assert not torch.allclose(x.grad, w)  # not the identity


@pytest.mark.parametrize("name", sorted(CASES))
def test_mixed_precision_training_does_not_round_the_transform(name):
    """Under bf16 autocast (the CUDA training default) the transform runs in fp32: the same
    values as without autocast (bf16 matmuls would move JPEG coefficients across quantization
    steps and Sobel magnitudes across the threshold)."""
    cls, params, _ = CASES[name]
    module = cls(**params)
    x = images(9)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = module(x)
    torch.testing.assert_close(mixed, module(x), rtol=0, atol=0)


def test_model_applies_the_transform_first_and_keeps_its_state_dict():
    torch.manual_seed(0)
    plain = ResNet(depth=8, width=8, in_channels=3).eval()
    with_jpeg = ResNet(depth=8, width=8, in_channels=3, transform=JPEG(quality=30)).eval()
    assert plain.state_dict().keys() == with_jpeg.state_dict().keys()
    with_jpeg.load_state_dict(plain.state_dict())
    x = images(8)
    with torch.no_grad():
        torch.testing.assert_close(with_jpeg(x).logits, plain(jpeg_compress(x, 30)).logits)
        assert not torch.allclose(with_jpeg(x).logits, plain(x).logits)


def test_checkpoint_meta_round_trip():
    cfg = transform_configs()["median"]
    module = transform_from_meta(transform_meta(cfg))
    assert isinstance(module, Median) and module.config == cfg
    assert transform_meta(transform_configs()["none"]) is None
    assert isinstance(transform_from_meta(None), torch.nn.Identity)
    assert isinstance(build_transform(None), torch.nn.Identity)


@pytest.mark.parametrize(
    ("name", "params", "key"),
    [
        ("jpeg", {"quality": 0}, "transform.quality"),
        ("bit_depth", {"bits": 0}, "transform.bits"),
        ("median", {"size": 1}, "transform.size"),
        ("lowpass", {"keep": 0.0}, "transform.keep"),
        ("edges", {"threshold": 1.0}, "transform.threshold"),
        ("jpeg", {"gradient": "smooth"}, "transform.gradient"),
    ],
)
def test_out_of_range_values_are_refused_naming_the_key(name, params, key):
    with pytest.raises(ConfigError, match=key):
        CASES[name][0](**params)


def test_unknown_option_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="valid transform options: bit_depth, edges"):
        transform_from_meta({"name": "blur"})
