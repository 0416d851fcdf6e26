"""FeatureSqueezingDetector: squeezers against numpy and scipy.ndimage, the score against a direct
computation with a real ResNet, and the straight-through (BPDA) gradient."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import median_filter

from robustctl.defenses.base import Probe
from robustctl.defenses.squeezing import (
    FeatureSqueezingDetector,
    SqueezeConfig,
    bit_depth,
    median_smooth,
)
from robustctl.errors import ConfigError
from robustctl.models import ResNet


def tiny_model(logit_sign: float = 1.0, channels: int = 3) -> ResNet:
    torch.manual_seed(0)
    return ResNet(
        depth=8, num_classes=5, in_channels=channels, width=2, logit_sign=logit_sign
    ).eval()


def softmax_np(a: np.ndarray) -> np.ndarray:
    e = np.exp(a - a.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


# -------------------------------------------------------------------------------- squeezers
@pytest.mark.parametrize("bits", [1, 2, 3, 5, 8])
def test_bit_depth_matches_numpy_rint(bits: int) -> None:
    levels = 2**bits - 1
    g = torch.Generator().manual_seed(bits)
    x = torch.rand(3, 3, 6, 6, generator=g)
    # exact midpoints between two levels (k + 1/2) / levels: numpy rounds them half to even
    mid = torch.tensor([(k + 0.5) / levels for k in range(min(levels, 36))], dtype=torch.float32)
    x.view(-1)[: len(mid)] = mid
    got = bit_depth(x, bits)
    want = np.rint(x.numpy() * np.float32(levels)) / np.float32(levels)
    np.testing.assert_array_equal(got.numpy(), want)
    assert len(torch.unique(got)) <= levels + 1
    if bits == 1:  # 1 bit: a threshold at 1/2 (0.5 itself rounds down, to the even 0)
        assert set(torch.unique(got).tolist()) <= {0.0, 1.0}
        assert float(bit_depth(torch.tensor([0.5]), 1)) == 0.0


@pytest.mark.parametrize("size", [2, 3, 4, 5])
@pytest.mark.parametrize("shape", [(2, 3, 7, 6), (1, 2, 2, 3), (1, 1, 1, 4)])
def test_median_matches_scipy_reflect(size: int, shape: tuple[int, int, int, int]) -> None:
    g = torch.Generator().manual_seed(size)
    x = torch.rand(shape, generator=g)
    for img in (x, torch.randint(0, 4, shape, generator=g).float() / 3):  # with many ties
        got = median_smooth(img, size)
        want = median_filter(img.numpy(), size=(1, 1, size, size), mode="reflect")
        np.testing.assert_array_equal(got.numpy(), want)


def test_median_two_by_two_by_hand() -> None:
    # one row [5, 1, 9, 3, 7]: the 2-wide window of output i covers inputs i-1 and i (input -1
    # mirrors to input 0) and of two values the larger is the median (scipy's rank 1 of 2)
    x = torch.tensor([5.0, 1.0, 9.0, 3.0, 7.0]).view(1, 1, 1, 5)
    assert median_smooth(x, 2).flatten().tolist() == [5.0, 5.0, 9.0, 9.0, 7.0]


# -------------------------------------------------------------------------------- the score
@pytest.mark.parametrize("logit_sign", [1.0, -1.0])
def test_score_matches_a_direct_computation(logit_sign: float) -> None:
    model = tiny_model(logit_sign).double()
    x = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    probe = Probe(model, x)
    det = FeatureSqueezingDetector(bits=3, median_size=2)
    got = det.score_probe(probe, probe.predictions)

    def probs(images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return softmax_np(model.predict_logits(torch.from_numpy(images)).numpy())

    xs = x.numpy()
    p0 = probs(xs)
    d_bits = np.abs(probs(np.rint(xs * 7.0) / 7.0) - p0).sum(1)
    d_median = np.abs(probs(median_filter(xs, size=(1, 1, 2, 2), mode="reflect")) - p0).sum(1)
    np.testing.assert_allclose(got.detach().numpy(), np.maximum(d_bits, d_median), rtol=1e-10)
    assert (d_bits != d_median).all()  # the max really chooses
    only_bits = FeatureSqueezingDetector(bits=3, median_size=None).score_probe(probe, None)
    only_median = FeatureSqueezingDetector(bits=None, median_size=2).score_probe(probe, None)
    np.testing.assert_allclose(only_bits.detach().numpy(), d_bits, rtol=1e-10)
    np.testing.assert_allclose(only_median.detach().numpy(), d_median, rtol=1e-10)
    assert ((got >= 0) & (got <= 2)).all()


def test_defaults_and_interface() -> None:
    cfg = SqueezeConfig()
    assert (cfg.name, cfg.bits, cfg.median_size) == ("feature_squeezing", 5, 2)
    det = FeatureSqueezingDetector()
    assert det.reads_images and det.needs_forward and det.layers == ()
    assert det.squeezer_names == ["bits5", "median2x2"]
    assert det.fit_on(None) is det and det.metrics() == {} and det.caveats() == {}  # type: ignore[arg-type]
    assert FeatureSqueezingDetector(SqueezeConfig(bits=1)).bits == 1
    for bad in ({"bits": 0}, {"bits": 17}, {"median_size": 1}, {"bits": None, "median_size": None}):
        with pytest.raises(ConfigError, match=r"defense\.(bits|median_size)"):
            SqueezeConfig(**bad)
    model = tiny_model()
    empty = Probe(model, torch.zeros(0, 3, 8, 8))
    assert det.score_probe(empty, empty.predictions).shape == (0,)


# ---------------------------------------------------------------------------------- gradients
def _weighted_softmax(model, weights, images):
    return (weights * torch.softmax(model.predict_logits(images), 1)).sum()


def test_bit_depth_branch_is_straight_through_the_gradient_at_the_squeezed_image() -> None:
    model = tiny_model().double()
    x0 = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    det = FeatureSqueezingDetector(bits=2, median_size=None)
    weights = torch.randn(4, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    (value,) = det.squeeze(x0)
    x = x0.clone().requires_grad_(True)
    (branch,) = det.squeeze_differentiable(x)
    assert torch.equal(branch, value) and not torch.equal(value, x0)  # same values
    (g_bpda,) = torch.autograd.grad(_weighted_softmax(model, weights, branch), x)
    at = value.clone().requires_grad_(True)  # f differentiated at squeeze(x) itself
    (g_at,) = torch.autograd.grad(_weighted_softmax(model, weights, at), at)
    torch.testing.assert_close(g_bpda, g_at, rtol=1e-12, atol=1e-15)
    assert g_at.abs().sum() > 0


def test_median_branch_sends_each_pixels_gradient_to_its_windows_median_pixel() -> None:
    """The exact gradient of f(median(x)), checked against the chain rule written out in numpy:
    the gradient of f at the median image, each pixel's added to the input pixel that is the
    median of its (reflect-padded, 3 x 3) window."""
    model = tiny_model().double()
    x0 = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    det = FeatureSqueezingDetector(bits=None, median_size=3)
    weights = torch.randn(2, 5, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    x = x0.clone().requires_grad_(True)
    (branch,) = det.squeeze_differentiable(x)
    assert torch.equal(branch, det.squeeze(x0)[0])
    (g_exact,) = torch.autograd.grad(_weighted_softmax(model, weights, branch), x)
    at = branch.detach().clone().requires_grad_(True)
    (g_at,) = torch.autograd.grad(_weighted_softmax(model, weights, at), at)

    xs, g_out = x0.numpy(), g_at.numpy()
    expected = np.zeros_like(xs)
    h, w = xs.shape[2:]
    reflect = lambda i, n: -i - 1 if i < 0 else (2 * n - i - 1 if i >= n else i)  # noqa: E731
    for n, c, i, j in np.ndindex(*xs.shape):
        window = [
            (reflect(i + di, h), reflect(j + dj, w)) for di in (-1, 0, 1) for dj in (-1, 0, 1)
        ]
        values = [xs[n, c, a, b] for a, b in window]
        a, b = window[int(np.argsort(values, kind="stable")[4])]
        expected[n, c, a, b] += g_out[n, c, i, j]
    np.testing.assert_allclose(g_exact.numpy(), expected, rtol=1e-10, atol=1e-14)
    assert np.abs(expected).sum() > 0


def test_score_gradient_reaches_the_images() -> None:
    model = tiny_model()
    x = torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(4)).requires_grad_(True)
    probe = Probe(model, x)
    FeatureSqueezingDetector().score_probe(probe, probe.predictions).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_the_attack_compares_log_scores_with_log_thresholds() -> None:
    """C&W-wb minimizes log(bound + floor) against log(T + floor): the same "bound <= T"
    decisions as the bound itself, on values as small as a confident image's score."""
    from robustctl.defenses.base import Probe

    det = FeatureSqueezingDetector()
    scores = torch.tensor([0.0, 1e-9, 2e-6, 3e-4, 0.5, 2.0], dtype=torch.float64)
    det.score_bound = lambda probe, toward: scores  # type: ignore[method-assign]
    probe = Probe.known(None, scores, scores, scores)  # type: ignore[arg-type]
    surrogate = det.attack_score(probe, torch.zeros(6, dtype=torch.long))
    torch.testing.assert_close(surrogate, torch.log(scores + det.ATTACK_FLOOR))
    for t in scores:
        assert torch.equal(surrogate <= det.attack_threshold(t), scores <= t)


def test_the_attack_bound_passes_through_a_certain_target_prediction() -> None:
    """What C&W-wb lowers against squeezing: max_s ||p - e_t||_1 + ||p_s - e_t||_1, by numpy;
    never below the score (triangle inequality)."""
    model = tiny_model().double()
    x = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    probe = Probe(model, x)
    det = FeatureSqueezingDetector(bits=3, median_size=2)
    score = det.score_probe(probe, probe.predictions).detach().numpy()

    def probs(images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return softmax_np(model.predict_logits(torch.from_numpy(images)).numpy())

    xs = x.numpy()
    squeezed = [np.rint(xs * 7.0) / 7.0, median_filter(xs, size=(1, 1, 2, 2), mode="reflect")]
    for target in range(5):
        e = np.eye(5)[target]
        own = np.abs(probs(xs) - e).sum(1)
        want = np.max([own + np.abs(probs(s) - e).sum(1) for s in squeezed], axis=0)
        bound = det.score_bound(probe, torch.full((6,), target)).detach().numpy()
        np.testing.assert_allclose(bound, want, rtol=1e-10)
        assert (bound >= score - 1e-12).all()


def test_one_attack_iteration_runs_the_squeezed_images_through_the_model_once() -> None:
    """C&W-wb reads the bound (to push down) and the score (to judge success) of one probe: they
    share its squeezed forward pass, so an iteration costs two forward passes (the images, their
    squeezed copies), not three."""
    from robustctl.threat_models.cw_wb import CWWhiteBox

    torch.manual_seed(0)
    model = ResNet(depth=8, num_classes=4, in_channels=1).eval()
    detector = FeatureSqueezingDetector()
    x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    calls = []
    real = model.layer_outputs
    model.layer_outputs = lambda *a, **k: calls.append(1) or real(*a, **k)  # type: ignore[method-assign]

    def forward_passes(steps: int) -> int:
        calls.clear()
        CWWhiteBox(model, detector, steps=steps, binary_steps=1, abort_early=False)(x, y)
        return len(calls)

    assert (forward_passes(7) - forward_passes(3)) / 4 == 2
