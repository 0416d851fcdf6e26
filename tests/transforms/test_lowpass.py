"""lowpass: against an independent numpy computation, the mask's symmetry (a real result), what
it keeps and removes, linearity before the clamp, and its gradient."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor

from robustctl.transforms.lowpass import lowpass, lowpass_complex, lowpass_mask


def reference(x: np.ndarray, keep: float) -> np.ndarray:
    """The same filter written directly in numpy: disc radius keep / 2 in cycles per pixel."""
    h, w = x.shape[-2:]
    radius = np.hypot(*np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing="ij"))
    mask = radius <= keep / 2 + 1e-9
    return np.clip(np.fft.ifft2(np.fft.fft2(x, axes=(-2, -1)) * mask, axes=(-2, -1)).real, 0, 1)


def rand(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def checkerboard(h: int, w: int) -> Tensor:
    """0.5 +/- 0.25 alternating between neighbours: the frequency (1/2, 1/2) alone, besides DC."""
    i, j = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return (0.5 + 0.25 * (-1.0) ** (i + j)).double().expand(1, 1, h, w)


@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (1, 1, 28, 28), (2, 1, 7, 5), (1, 3, 6, 9)])
@pytest.mark.parametrize("keep", [0.1, 0.3, 0.5, 0.8, 1.0])
def test_matches_numpy(shape: tuple[int, ...], keep: float) -> None:
    x = rand(*shape)
    assert np.allclose(lowpass(x, keep).numpy(), reference(x.numpy(), keep), atol=1e-12)


def test_float32_input_stays_float32_and_close_to_numpy() -> None:
    x = rand(2, 3, 12, 10, dtype=torch.float32)
    y = lowpass(x, 0.4)
    assert y.dtype == torch.float32 and y.shape == x.shape
    assert np.allclose(y.numpy(), reference(x.double().numpy(), 0.4), atol=1e-5)


@pytest.mark.parametrize(("h", "w"), [(8, 8), (7, 6), (28, 28), (5, 9)])
@pytest.mark.parametrize("keep", [0.25, 0.5, 1.0])
def test_mask_is_hermitian_so_the_result_is_real(h: int, w: int, keep: float) -> None:
    mask = lowpass_mask(h, w, keep)
    mirror = (-torch.arange(h)) % h, (-torch.arange(w)) % w
    assert torch.equal(mask, mask[mirror[0]][:, mirror[1]])
    x = rand(2, 3, h, w)
    filtered = lowpass_complex(x, keep)
    assert filtered.imag.abs().max() < 1e-5 * filtered.real.abs().max()


def test_keep_one_drops_exactly_the_corners_beyond_radius_one_half() -> None:
    mask = lowpass_mask(8, 8, 1.0)
    k = torch.fft.fftfreq(8) * 8  # signed bin indices 0..3, -4..-1
    dropped = (k[:, None] ** 2 + k[None, :] ** 2) > 16
    assert torch.equal(~mask, dropped)
    assert int((~mask).sum()) == 17
    assert bool(mask[4, 0]) and bool(mask[0, 4])  # the Nyquist bins on the axes are kept


def test_constant_image_is_unchanged() -> None:
    x = torch.full((2, 3, 9, 7), 0.3, dtype=torch.float64)
    assert torch.allclose(lowpass(x, 0.05), x, atol=1e-12)


@pytest.mark.parametrize(("h", "w"), [(8, 8), (28, 28)])
def test_checkerboard_is_removed_and_full_period_cosine_kept(h: int, w: int) -> None:
    board = checkerboard(h, w)
    assert torch.allclose(lowpass(board, 0.5), torch.full_like(board, 0.5), atol=1e-12)
    i = torch.arange(h, dtype=torch.float64).view(1, 1, h, 1)
    cosine = (0.5 + 0.25 * torch.cos(2 * math.pi * i / h)).expand(1, 1, h, w)
    assert torch.allclose(lowpass(cosine, 0.5), cosine, atol=1e-12)


def test_cutoff_separates_frequencies_inside_and_outside_the_disc() -> None:
    """A cosine of 1/4 cycle per pixel sits at radius 0.25: kept for keep = 0.5, removed for
    keep = 0.4."""
    j = torch.arange(16, dtype=torch.float64).view(1, 1, 1, 16)
    wave = (0.5 + 0.25 * torch.cos(2 * math.pi * j / 4)).expand(1, 1, 16, 16)
    assert torch.allclose(lowpass(wave, 0.5), wave, atol=1e-12)
    assert torch.allclose(lowpass(wave, 0.4), torch.full_like(wave, 0.5), atol=1e-12)


def test_frequency_on_the_rim_is_kept_despite_rounding() -> None:
    """3 cycles over 10 pixels: fftfreq gives 0.30000000000000004 for keep / 2 = 0.3; the rim
    counts as kept (module docstring)."""
    j = torch.arange(10, dtype=torch.float64).view(1, 1, 1, 10)
    wave = (0.5 + 0.25 * torch.cos(2 * math.pi * 3 * j / 10)).expand(1, 1, 10, 10)
    assert torch.allclose(lowpass(wave, 0.6), wave, atol=1e-12)
    assert torch.allclose(lowpass(wave, 0.59), torch.full_like(wave, 0.5), atol=1e-12)


def test_linear_where_nothing_is_clamped() -> None:
    a = 0.4 + 0.2 * rand(2, 3, 10, 12, seed=1)
    b = 0.4 + 0.2 * rand(2, 3, 10, 12, seed=2)
    fa, fb, fab = lowpass(a, 0.3), lowpass(b, 0.3), lowpass(0.25 * a + 0.75 * b, 0.3)
    assert 0 < min(fa.min(), fb.min()) and max(fa.max(), fb.max()) < 1  # the clamp is inactive
    assert torch.allclose(fab, 0.25 * fa + 0.75 * fb, atol=1e-12)
    assert not torch.allclose(fa, a, atol=1e-3)  # it is not the identity on these images


def test_clamps_to_the_unit_interval() -> None:
    """A sharp square ringing under an ideal filter overshoots [0, 1]: the output is clamped."""
    x = torch.zeros(1, 1, 16, 16, dtype=torch.float64)
    x[..., 4:12, 4:12] = 1.0
    raw = lowpass_complex(x, 0.3).real
    assert raw.min() < -0.01 and raw.max() > 1.01
    assert torch.equal(lowpass(x, 0.3), raw.clamp(0, 1))


def test_gradient_is_the_filter_itself() -> None:
    """The filter is a convolution with a real even kernel, so its Jacobian is symmetric: the
    gradient of <w, lowpass(x)> is lowpass applied to w (where nothing is clamped)."""
    x = (0.4 + 0.2 * rand(1, 2, 8, 10, seed=3)).requires_grad_(True)
    weights = rand(1, 2, 8, 10, seed=4) - 0.5
    (lowpass(x, 0.35) * weights).sum().backward()
    assert x.grad is not None and x.grad.abs().max() > 1e-3
    assert torch.allclose(x.grad, lowpass_complex(weights, 0.35).real, atol=1e-12)


def test_input_is_not_modified() -> None:
    x = rand(1, 3, 8, 8)
    before = x.clone()
    lowpass(x, 0.2)
    assert torch.equal(x, before)


@pytest.mark.parametrize("keep", [0.0, -0.1, 1.01, 2.0])
def test_rejects_keep_outside_0_1(keep: float) -> None:
    with pytest.raises(ValueError, match="keep"):
        lowpass(rand(1, 1, 8, 8), keep)


@pytest.mark.gpu
def test_cuda_matches_cpu() -> None:
    x = rand(2, 3, 28, 28)
    assert torch.allclose(lowpass(x.cuda(), 0.4).cpu(), lowpass(x, 0.4), atol=1e-10)
