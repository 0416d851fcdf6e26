"""sobel_magnitude against scipy.ndimage.sobel and its true maximum; sobel_edges on hand-computed
step edges, constant images and colour images."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import Tensor

from robustctl.transforms.edges import (
    MAX_MAGNITUDE,
    sobel_edges,
    sobel_gradients,
    sobel_magnitude,
)


def rand(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def step(h: int, w: int, column: int, height: float = 1.0, channels: int = 1) -> Tensor:
    """0 left of ``column``, ``height`` from it on."""
    x = torch.zeros(1, channels, h, w, dtype=torch.float64)
    x[..., column:] = height
    return x


@pytest.mark.parametrize("shape", [(2, 1, 8, 8), (1, 3, 28, 28), (2, 3, 5, 7), (1, 1, 2, 3)])
def test_magnitude_matches_scipy_sobel(shape: tuple[int, ...]) -> None:
    x = rand(*shape)
    expected = []
    for gray in x.mean(dim=1).numpy():  # one 2-D image at a time: scipy smooths every other axis
        sx = ndimage.sobel(gray, axis=1, mode="nearest")
        sy = ndimage.sobel(gray, axis=0, mode="nearest")
        expected.append(np.hypot(sx, sy) / math.sqrt(20))
    assert np.allclose(sobel_magnitude(x)[:, 0].numpy(), np.stack(expected), atol=1e-12)


def test_magnitude_reaches_exactly_one_at_its_true_maximum() -> None:
    """Every binary 3x3 image (m^2 is convex, so the maximum over [0, 1]^9 is at one of them):
    the centre's magnitude peaks at exactly 1, so sqrt(20), not 4 sqrt(2), is the maximum."""
    windows = torch.tensor(list(itertools.product([0.0, 1.0], repeat=9)), dtype=torch.float64)
    centre = sobel_magnitude(windows.view(-1, 1, 3, 3))[:, 0, 1, 1]
    assert torch.isclose(centre.max(), torch.tensor(1.0, dtype=torch.float64), atol=1e-12)
    best = windows[centre.argmax()].view(3, 3)
    gx = (best[:, 2] - best[:, 0]) @ torch.tensor([1.0, 2.0, 1.0], dtype=torch.float64)
    gy = (best[2] - best[0]) @ torch.tensor([1.0, 2.0, 1.0], dtype=torch.float64)
    assert sorted([abs(float(gx)), abs(float(gy))]) == [2.0, 4.0]
    assert MAX_MAGNITUDE == pytest.approx(2 * math.sqrt(5))


def test_magnitude_stays_in_unit_interval_on_random_images() -> None:
    m = sobel_magnitude(torch.bernoulli(rand(8, 3, 16, 16, seed=4)))
    assert m.min() >= 0 and m.max() <= 1 and m.max() > 0.5


def test_unit_step_gives_ones_on_the_two_columns_beside_it() -> None:
    """Columns 0-2 are 0 and 3-5 are 1. At column 2 the right neighbours are 1 and the left 0:
    gx = 1 + 2 + 1 = 4, gy = 0 (rows are equal, replicated at the top and bottom), so
    m = 4 / sqrt(20) ~ 0.894; the same at column 3; elsewhere both neighbours are equal: m = 0."""
    x = step(6, 6, column=3)
    expected_m = torch.zeros(6, 6, dtype=torch.float64)
    expected_m[:, 2:4] = 4 / math.sqrt(20)
    assert torch.allclose(sobel_magnitude(x)[0, 0], expected_m, atol=1e-12)
    expected = torch.zeros(1, 1, 6, 6, dtype=torch.float64)
    expected[..., 2:4] = 1.0
    for threshold in (0.0, 0.5, 0.89):
        assert torch.equal(sobel_edges(x, threshold), expected)
    assert torch.equal(sobel_edges(x, 0.9), torch.zeros_like(x))  # 0.894 is not above 0.9


def test_gradients_are_oriented_right_minus_left_and_bottom_minus_top() -> None:
    x = step(6, 6, column=3)  # rises to the right
    gx, gy = sobel_gradients(x)
    assert torch.equal(gx[0, 0, :, 2:4], torch.full((6, 2), 4.0).double())
    assert torch.equal(gy, torch.zeros_like(gy))
    gx_t, gy_t = sobel_gradients(1.0 - x.transpose(-1, -2))  # falls from top to bottom
    assert torch.equal(gy_t[0, 0, 2:4], torch.full((2, 6), -4.0).double())
    assert torch.equal(gx_t, torch.zeros_like(gx_t))


def test_threshold_is_on_the_normalized_magnitude() -> None:
    """A step of height 0.5: m = 2 / sqrt(20) ~ 0.447 beside it."""
    x = step(5, 8, column=4, height=0.5)
    assert int(sobel_edges(x, 0.44).sum()) == 2 * 5
    assert int(sobel_edges(x, 0.45).sum()) == 0


def test_horizontal_step_marks_two_rows() -> None:
    x = step(6, 5, column=3).transpose(-1, -2)  # rows 3.. are 1
    expected = torch.zeros(1, 1, 5, 6, dtype=torch.float64)
    expected[..., 2:4, :] = 1.0
    assert torch.equal(sobel_edges(x, 0.5), expected)


@pytest.mark.parametrize("shape", [(2, 3, 7, 9), (1, 1, 1, 1), (1, 1, 1, 6)])
def test_constant_image_has_no_edges(shape: tuple[int, ...]) -> None:
    x = torch.full(shape, 0.7)
    assert torch.equal(sobel_edges(x, 0.0), torch.zeros_like(x))
    assert torch.equal(sobel_magnitude(x), torch.zeros(shape[0], 1, *shape[2:]))


def test_rgb_channels_are_identical_edges_of_the_channel_mean() -> None:
    """Only the red channel steps (height 1): the channel mean steps by 1/3, m = 4 / (3 sqrt(20))
    ~ 0.298 beside it; a luma weighting (0.299 for red) would give ~0.267."""
    x = torch.zeros(2, 3, 6, 6, dtype=torch.float64)
    x[:, 0, :, 3:] = 1.0
    assert torch.equal(sobel_edges(x, 0.28).sum(dim=(2, 3)), torch.full((2, 3), 12.0).double())
    assert int(sobel_edges(x, 0.3).sum()) == 0
    edges = sobel_edges(rand(2, 3, 10, 12, seed=2), 0.2)
    assert edges.shape == (2, 3, 10, 12) and edges.dtype == torch.float64
    assert torch.equal(edges[:, 0], edges[:, 1]) and torch.equal(edges[:, 0], edges[:, 2])
    assert set(edges.unique().tolist()) == {0.0, 1.0}


def test_float32_and_input_untouched() -> None:
    x = rand(1, 3, 8, 8, dtype=torch.float32)
    before = x.clone()
    edges = sobel_edges(x, 0.1)
    assert edges.dtype == torch.float32 and torch.equal(x, before)


def test_magnitude_gradient_is_finite_and_zero_on_flat_regions() -> None:
    x = step(6, 6, column=3).requires_grad_(True)
    sobel_magnitude(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("threshold", [-0.1, 1.0, 1.5])
def test_rejects_threshold_outside_0_1(threshold: float) -> None:
    with pytest.raises(ValueError, match="threshold"):
        sobel_edges(rand(1, 1, 4, 4), threshold)


@pytest.mark.gpu
def test_cuda_matches_cpu() -> None:
    x = rand(2, 3, 28, 28)
    assert torch.allclose(sobel_magnitude(x.cuda()).cpu(), sobel_magnitude(x), atol=1e-12)
    assert torch.equal(sobel_edges(x.cuda(), 0.3).cpu(), sobel_edges(x, 0.3))
