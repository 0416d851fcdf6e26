"""jpeg_compress: the round trip against PIL's libjpeg (4:4:4), its building blocks against
scipy, PIL and the IJG tables, the error's trend with quality, and shapes off the 8-pixel grid."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.fft import dct
from torch import Tensor

from robustctl.transforms.jpeg import (
    CHROMINANCE_TABLE,
    LUMINANCE_TABLE,
    dct_matrix,
    jpeg_compress,
    quantization_table,
    rgb_to_ycbcr,
    ycbcr_to_rgb,
)


def smooth_images(n: int, c: int, h: int, w: int, coarse: int, seed: int) -> Tensor:
    """8-bit images (multiples of 1/255): coarse x coarse uniform noise, bilinearly upsampled."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(n, c, coarse, coarse, generator=g, dtype=torch.float64)
    up = F.interpolate(noise, size=(h, w), mode="bilinear", align_corners=False)
    return torch.round(up * 255) / 255


def pil_jpeg(x: Tensor, quality: int) -> Tensor:
    """Each image of x [N, C, H, W] (8-bit values) saved by PIL as JPEG (4:4:4) and decoded."""
    out = []
    for image in (x.numpy() * 255).round().astype(np.uint8):
        if image.shape[0] == 1:
            pil = Image.fromarray(image[0], mode="L")
        else:
            pil = Image.fromarray(image.transpose(1, 2, 0), mode="RGB")
        buffer = io.BytesIO()
        pil.save(buffer, format="JPEG", quality=quality, subsampling=0)
        decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())), dtype=np.float64)
        out.append(decoded[None] if decoded.ndim == 2 else decoded.transpose(2, 0, 1))
    return torch.from_numpy(np.stack(out)) / 255


def mean_levels(a: Tensor, b: Tensor) -> float:
    """Mean absolute difference in grey levels (0..255 units)."""
    return float((a - b).abs().mean() * 255)


# 16 images per case: one image of one 8x8 block can lose a whole quantization step where a DCT
# coefficient sits within ~0.001 of a rounding boundary (libjpeg's fixed-point DCT rounds it the
# other way), so a mean over few blocks is noisy. Measured mean |ours - PIL| (levels) at q = 25,
# 50, 75, 95 on these images: RGB 32x32 1.15, 1.12, 1.10, 1.00; L 8x8 0.30, 0.24, 0.24, 0.19;
# L 28x28 0.09, 0.15, 0.12, 0.17 (over 6 other seeds: RGB <= 1.28, L <= 0.31). Grayscale follows
# libjpeg up to rounding; RGB adds libjpeg's 8-bit YCbCr samples (rounded after the colour
# conversion and after the IDCT), which jpeg_compress keeps real (module docstring): rounding
# them too brings RGB to ~0.2 levels. Bounds: 1.5 levels (RGB), 0.5 (L). The identity would be
# off by the whole JPEG error |PIL - input|; ours is within RATIO of it (measured <= 0.57, for
# RGB at q = 95 where the JPEG error itself is smallest; <= 0.24 at q <= 75).
PIL_CASES = [
    ("rgb", (3, 32, 32, 8), 1.5),
    ("gray8", (1, 8, 8, 4), 0.5),
    ("gray28", (1, 28, 28, 4), 0.5),
]
RATIO = 0.65


@pytest.mark.parametrize("quality", [25, 50, 75, 95])
@pytest.mark.parametrize(("name", "dims", "bound"), PIL_CASES, ids=[c[0] for c in PIL_CASES])
def test_matches_pil_4_4_4(name: str, dims: tuple[int, ...], bound: float, quality: int) -> None:
    c, h, w, coarse = dims
    x = smooth_images(16, c, h, w, coarse, seed=quality)
    ours, reference = jpeg_compress(x, quality), pil_jpeg(x, quality)
    to_pil, jpeg_error = mean_levels(ours, reference), mean_levels(reference, x)
    print(f"{name} q={quality}: |ours-PIL| {to_pil:.3f}, |PIL-input| {jpeg_error:.3f} levels")
    assert to_pil < bound
    assert to_pil < RATIO * jpeg_error


def test_quality_100_is_near_lossless_and_error_grows_as_quality_falls() -> None:
    x = smooth_images(2, 3, 32, 32, coarse=8, seed=7)
    near = jpeg_compress(x, 100)
    assert mean_levels(near, x) < 0.5
    assert float((near - x).abs().max() * 255) <= 2.5
    errors = [mean_levels(jpeg_compress(x, q), x) for q in (10, 50, 90)]
    assert errors[0] > 1.5 * errors[1] > 1.5**2 * errors[2] > 0.5


@pytest.mark.parametrize("shape", [(1, 1, 8, 8), (2, 1, 28, 28), (2, 3, 5, 7), (1, 3, 1, 1)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_dtype_range_and_8_bit_output(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0)).to(dtype)
    before = x.clone()
    y = jpeg_compress(x, 40)
    assert y.shape == x.shape and y.dtype == dtype
    assert torch.equal(x, before)  # the input is not modified
    assert y.min() >= 0 and y.max() <= 1
    levels = y.double() * 255
    assert torch.allclose(levels, levels.round(), atol=1e-3)


def test_padding_replicates_the_last_row_and_column() -> None:
    """A 5x7 image compresses as the top-left of its edge-replicated 8x8 extension: the blocks
    are coded independently, so this pins both the padding rule and the crop."""
    x = smooth_images(2, 3, 5, 7, coarse=3, seed=3)
    padded = F.pad(x, (0, 1, 0, 3), mode="replicate")
    assert torch.equal(padded[..., 4, :], padded[..., 7, :])  # the bottom row was repeated
    assert torch.equal(jpeg_compress(x, 30), jpeg_compress(padded, 30)[..., :5, :7])
    zero_padded = F.pad(x, (0, 1, 0, 3))
    assert not torch.equal(jpeg_compress(x, 30), jpeg_compress(zero_padded, 30)[..., :5, :7])


def test_batch_rows_are_independent() -> None:
    x = smooth_images(4, 3, 16, 24, coarse=4, seed=11)
    whole = jpeg_compress(x, 60)
    assert torch.equal(whole[2:3], jpeg_compress(x[2:3], 60))


def test_dct_matrix_is_scipy_orthonormal_dct_ii() -> None:
    d = dct_matrix()
    basis = np.eye(8)
    assert np.allclose(d.numpy(), dct(basis, type=2, norm="ortho", axis=0), atol=1e-12)
    assert torch.allclose(d @ d.T, torch.eye(8, dtype=torch.float64), atol=1e-12)


def test_quantization_tables_follow_the_ijg_scaling() -> None:
    assert torch.equal(quantization_table(LUMINANCE_TABLE, 50), torch.tensor(LUMINANCE_TABLE))
    # q = 75: scale 50 -> floor((16 * 50 + 50) / 100) = 8, ... (libjpeg's well-known q75 table).
    first_row = [8, 6, 5, 8, 12, 20, 26, 31]
    assert quantization_table(LUMINANCE_TABLE, 75)[0].tolist() == first_row
    assert quantization_table(CHROMINANCE_TABLE, 75)[0].tolist() == [9, 9, 12, 24, 50, 50, 50, 50]
    # q = 30: integer scale 5000 // 30 = 166 (not 166.7): 16 -> floor(2706 / 100) = 27.
    assert int(quantization_table(LUMINANCE_TABLE, 30)[0, 0]) == 27
    assert torch.all(quantization_table(CHROMINANCE_TABLE, 100) == 1)
    assert torch.all(quantization_table(LUMINANCE_TABLE, 1) == 255)


def test_quantization_tables_match_the_ones_pil_writes_for_every_quality() -> None:
    """PIL (libjpeg) stores its tables in the file: natural order, 0 = luminance, 1 = chroma."""
    pixels = Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8), mode="RGB")
    for quality in range(1, 101):
        buffer = io.BytesIO()
        pixels.save(buffer, format="JPEG", quality=quality, subsampling=0)
        written = Image.open(io.BytesIO(buffer.getvalue())).quantization
        for index, base in ((0, LUMINANCE_TABLE), (1, CHROMINANCE_TABLE)):
            ours = quantization_table(base, quality).flatten().tolist()
            assert ours == list(written[index]), (quality, index)


def test_colour_conversion_matches_pil_ycbcr() -> None:
    g = torch.Generator().manual_seed(5)
    rgb = torch.randint(0, 256, (1, 3, 16, 16), generator=g, dtype=torch.uint8)
    pil = Image.fromarray(rgb[0].permute(1, 2, 0).numpy(), mode="RGB").convert("YCbCr")
    reference = torch.from_numpy(np.asarray(pil, dtype=np.float64)).permute(2, 0, 1)[None]
    ycc = rgb_to_ycbcr(rgb.double())
    assert (ycc - reference).abs().max() <= 1.0  # PIL rounds to integers
    assert torch.allclose(ycbcr_to_rgb(ycc), rgb.double(), atol=0.01)


@pytest.mark.parametrize("quality", [0, 101, 50.0, True, -5])
def test_rejects_quality_outside_1_to_100(quality: object) -> None:
    with pytest.raises(ValueError, match="quality"):
        jpeg_compress(torch.rand(1, 3, 8, 8), quality)  # type: ignore[arg-type]


@pytest.mark.parametrize("shape", [(1, 2, 8, 8), (3, 8, 8)])
def test_rejects_images_other_than_gray_or_rgb_batches(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="images"):
        jpeg_compress(torch.rand(shape), 50)


@pytest.mark.gpu
def test_cuda_matches_cpu() -> None:
    x = smooth_images(2, 3, 20, 28, coarse=8, seed=1)
    assert torch.equal(jpeg_compress(x.cuda(), 50).cpu(), jpeg_compress(x, 50))
