"""JPEG compression (Dziugaite et al. 2016; Guo et al. 2018; Das et al. 2017): a baseline-JPEG
encode/decode round trip of each image, written in torch so that it runs batched on any device.

Algorithm, for images x [N, C, H, W] in [0, 1] with C in {1, 3} and quality q in 1..100:

1. p = 255 x.
2. Colour (C = 3): JFIF / ITU-R BT.601 full-range RGB -> YCbCr, as libjpeg (and so PIL) uses:
       Y  =  0.299 R    + 0.587 G    + 0.114 B
       Cb = -0.168736 R - 0.331264 G + 0.5 B      + 128
       Cr =  0.5 R      - 0.418688 G - 0.081312 B + 128
   For C = 1 the single channel is Y.
3. Level shift: every component minus 128.
4. Pad H and W up to multiples of 8 by repeating the last row / column (edge replication).
5. Per 8 x 8 block B of each component: orthonormal 2-D DCT-II, F = D B D^T, with
       D[k, n] = c_k cos((2n + 1) k pi / 16),  c_0 = sqrt(1/8),  c_k = sqrt(2/8) (k > 0)
   (row index of F = vertical frequency, column = horizontal).
6. Quantize and dequantize: F' = round(F / T) * T (``torch.round``: half to even), T the
   quality-scaled table: Annex K luminance table for Y, chrominance table for Cb and Cr, scaled
   by the IJG (libjpeg ``jpeg_quality_scaling``) rule with libjpeg's integer arithmetic:
       s = floor(5000 / q) if q < 50 else 200 - 2 q
       T = clamp(floor((T_base s + 50) / 100), 1, 255)
7. Inverse DCT, B' = D^T F' D; crop the padding; + 128.
8. Colour back (C = 3), with the JFIF decoder's constants:
       R = Y + 1.402 (Cr - 128)
       G = Y - 0.344136 (Cb - 128) - 0.714136 (Cr - 128)
       B = Y + 1.772 (Cb - 128)
9. Round to integers and clip to 0..255 (a decoder writing 8-bit pixels), then / 255.

Departures from a real baseline JPEG codec (libjpeg, as PIL calls it):

- no chroma subsampling: Cb and Cr keep full resolution (4:4:4, PIL's ``subsampling=0``), where
  libjpeg's default halves them in both directions (4:2:0);
- the intermediate values stay real: the encoder's YCbCr samples and the decoder's IDCT output
  are not rounded to 8-bit integers, nor clipped, before the next step; the DCTs are exact
  floating-point matrix products rather than libjpeg's fixed-point ones; and ``torch.round``
  rounds halves to even where libjpeg rounds them away from zero;
- no entropy coding (it is lossless, so it does not change the decoded image).

Measured against PIL (``quality=q, subsampling=0``, q = 25..95) on smooth 8-bit images, the mean
absolute difference of the decoded pixels is 0.1-0.3 grey levels for grayscale and ~1.0-1.3 for
RGB (tests/transforms/test_jpeg.py). Most of the RGB difference is the second departure: rounding
and clipping the YCbCr samples as libjpeg does brings it to ~0.2 levels. Either way a coefficient
within ~0.001 of a rounding boundary can land one quantization step apart from libjpeg's.

The value is a step function of x (rounding): its autograd gradient is zero almost everywhere
(attacks see it through BPDA, ``robustctl.transforms.base``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral

import torch
import torch.nn.functional as F
from torch import Tensor

from robustctl.config.validation import require
from robustctl.transforms.base import InputTransform, TransformConfig

BLOCK = 8

# ITU-T T.81 Annex K, Tables K.1 (luminance) and K.2 (chrominance), in natural (row-major) order.
LUMINANCE_TABLE = (
    (16, 11, 10, 16, 24, 40, 51, 61),
    (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77),
    (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101),
    (72, 92, 95, 98, 112, 100, 103, 99),
)
CHROMINANCE_TABLE = (
    (17, 18, 24, 47, 99, 99, 99, 99),
    (18, 21, 26, 66, 99, 99, 99, 99),
    (24, 26, 56, 99, 99, 99, 99, 99),
    (47, 66, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
)

# JFIF RGB -> YCbCr (rows Y, Cb, Cr; offsets added after the product) and the decoder's inverse.
RGB_TO_YCBCR = (
    (0.299, 0.587, 0.114),
    (-0.168736, -0.331264, 0.5),
    (0.5, -0.418688, -0.081312),
)
YCBCR_OFFSET = (0.0, 128.0, 128.0)
YCBCR_TO_RGB = (
    (1.0, 0.0, 1.402),
    (1.0, -0.344136, -0.714136),
    (1.0, 1.772, 0.0),
)


def quality_scale(quality: int) -> int:
    """IJG scaling factor (percent) of quality q: floor(5000 / q) for q < 50, else 200 - 2 q."""
    return 5000 // quality if quality < 50 else 200 - 2 * quality


def quantization_table(base: tuple[tuple[int, ...], ...], quality: int) -> Tensor:
    """clamp(floor((base * s + 50) / 100), 1, 255) with s = ``quality_scale(quality)``, as an
    int64 [8, 8] tensor (libjpeg's ``jpeg_add_quant_table`` with ``force_baseline``)."""
    table = (torch.tensor(base, dtype=torch.int64) * quality_scale(quality) + 50) // 100
    return table.clamp(1, 255)


def dct_matrix(dtype: torch.dtype = torch.float64, device: torch.device | None = None) -> Tensor:
    """The orthonormal 8-point DCT-II matrix D[k, n] = c_k cos((2n + 1) k pi / 16), c_0 =
    sqrt(1/8), c_k = sqrt(2/8): F = D B D^T is the 2-D DCT of block B, B = D^T F D its inverse."""
    k = torch.arange(BLOCK, dtype=torch.float64).unsqueeze(1)
    n = torch.arange(BLOCK, dtype=torch.float64).unsqueeze(0)
    d = torch.cos((2 * n + 1) * k * math.pi / (2 * BLOCK)) * math.sqrt(2 / BLOCK)
    d[0] = d[0] / math.sqrt(2)
    return d.to(dtype=dtype, device=device)


def _check_quality(quality: int) -> None:
    if isinstance(quality, bool) or not isinstance(quality, Integral) or not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be an integer in 1..100, got {quality!r}")


def _check_images(x: Tensor) -> None:
    if x.dim() != 4 or x.shape[1] not in (1, 3) or not x.is_floating_point():
        raise ValueError(
            f"images must be a float tensor [N, C, H, W] with C in (1, 3), "
            f"got {x.dtype} of shape {tuple(x.shape)}"
        )


def _mix_channels(matrix: tuple[tuple[float, ...], ...], x: Tensor) -> Tensor:
    """out[:, i] = sum_j matrix[i][j] x[:, j] for images x [N, 3, H, W]."""
    m = torch.tensor(matrix, dtype=x.dtype, device=x.device)
    return torch.einsum("ij,njhw->nihw", m, x)


def _offsets(x: Tensor) -> Tensor:
    return torch.tensor(YCBCR_OFFSET, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)


def rgb_to_ycbcr(rgb: Tensor) -> Tensor:
    """JFIF RGB -> YCbCr of [N, 3, H, W] in 0..255 units (step 2 of the module docstring)."""
    return _mix_channels(RGB_TO_YCBCR, rgb) + _offsets(rgb)


def ycbcr_to_rgb(ycc: Tensor) -> Tensor:
    """JFIF YCbCr -> RGB of [N, 3, H, W] in 0..255 units (step 8), not rounded nor clipped."""
    return _mix_channels(YCBCR_TO_RGB, ycc - _offsets(ycc))


def _to_blocks(x: Tensor) -> Tensor:
    """[N, C, 8a, 8b] -> [N, C, a, b, 8, 8]: the 8 x 8 blocks, each in its own trailing dims."""
    n, c, h, w = x.shape
    return x.reshape(n, c, h // BLOCK, BLOCK, w // BLOCK, BLOCK).permute(0, 1, 2, 4, 3, 5)


def _from_blocks(blocks: Tensor) -> Tensor:
    """Inverse of :func:`_to_blocks`."""
    n, c, a, b = blocks.shape[:4]
    return blocks.permute(0, 1, 2, 4, 3, 5).reshape(n, c, a * BLOCK, b * BLOCK)


def _quantize_blocks(shifted: Tensor, quality: int) -> Tensor:
    """Steps 4-7 on level-shifted components [N, C, H, W]: pad, DCT, quantize, dequantize,
    inverse DCT, crop."""
    h, w = shifted.shape[-2:]
    pad_h, pad_w = -h % BLOCK, -w % BLOCK
    padded = F.pad(shifted, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else shifted
    tables = [LUMINANCE_TABLE, CHROMINANCE_TABLE, CHROMINANCE_TABLE][: shifted.shape[1]]
    table = torch.stack([quantization_table(t, quality) for t in tables])
    table = table.to(dtype=shifted.dtype, device=shifted.device).view(1, -1, 1, 1, BLOCK, BLOCK)
    d = dct_matrix(shifted.dtype, shifted.device)
    coefficients = d @ _to_blocks(padded) @ d.T
    dequantized = torch.round(coefficients / table) * table
    return _from_blocks(d.T @ dequantized @ d)[..., :h, :w]


def jpeg_compress(x: Tensor, quality: int) -> Tensor:
    """Baseline-JPEG round trip (4:4:4) of images ``x`` [N, C, H, W] in [0, 1], C in {1, 3}, at
    ``quality`` 1..100 (module docstring: algorithm and departures). Returns the decoded images,
    multiples of 1/255 in [0, 1], with x's shape, dtype and device."""
    _check_quality(quality)
    _check_images(x)
    work = x if x.dtype in (torch.float32, torch.float64) else x.float()
    pixels = work * 255.0
    rgb = pixels.shape[1] == 3
    components = rgb_to_ycbcr(pixels) if rgb else pixels
    decoded = _quantize_blocks(components - 128.0, quality) + 128.0
    if rgb:
        decoded = ycbcr_to_rgb(decoded)
    return (torch.round(decoded).clamp(0.0, 255.0) / 255.0).to(x.dtype)


@dataclass
class JPEGConfig(TransformConfig):
    """``transform=jpeg``: the round trip at ``quality`` 1..100 (Guo et al. 2018 use 75; Das et
    al. 2017 an ensemble of 20-80)."""

    name: str = "jpeg"
    quality: int = 75

    def __post_init__(self) -> None:
        super().__post_init__()
        require(
            1 <= self.quality <= 100, "transform.quality", f"must be in 1..100, got {self.quality}"
        )


class JPEG(InputTransform):
    config_type = JPEGConfig

    def apply(self, x: Tensor) -> Tensor:
        return jpeg_compress(x, int(self.config.quality))
