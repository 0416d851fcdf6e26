"""Median smoothing (Xu, Evans and Qi 2018; the taxonomy's local smoothing): each output pixel is
the median of a k x k window (k = ``size``) of its image and channel, exactly
``scipy.ndimage.median_filter(x, size=(1, 1, k, k), mode="reflect")``: the window of output pixel
(i, j) covers input rows i - k//2 .. i + (k-1) - k//2 (the same for columns), so an even window
reaches one pixel further up/left than down/right; outside the image the input is mirrored with its
edge pixel repeated (``reflect``: d c b a | a b c d | d c b a); of an even number k^2 of values the
upper of the two middle ones is the median (scipy's rank k^2 // 2).

Gradient: the median is continuous and piecewise linear (each output is one of its window's
inputs, which one changing only where two values tie), so autograd's derivative (1 on the pixel
holding each window's median, 0 elsewhere) is its true gradient almost everywhere, and attacks use
it (``differentiable``; ``gradient`` is not consulted). It is sparse but not masked: on digits
(tests/transforms/test_bpda_attack.py) PGD through it succeeds at least as often as PGD through
an identity BPDA.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from robustctl.config.validation import require
from robustctl.transforms.base import InputTransform, TransformConfig


def _reflect_index(n: int, before: int, after: int, device: torch.device) -> Tensor:
    """Indices into [0, n) of positions -before .. n-1+after under scipy's ``reflect`` boundary
    (half-sample symmetric: d c b a | a b c d | d c b a), for any padding width."""
    pos = torch.arange(-before, n + after, device=device) % (2 * n)
    return torch.where(pos < n, pos, 2 * n - 1 - pos)


def median_smooth(x: Tensor, size: int) -> Tensor:
    """Median over a ``size`` x ``size`` window of each image and channel of ``x`` [N, C, H, W]:
    ``scipy.ndimage.median_filter(x, size=(1, 1, size, size), mode="reflect")`` (module
    docstring: window placement, boundary, upper median for an even count)."""
    if x.dim() != 4:
        raise ValueError(f"images must be [N, C, H, W], got shape {tuple(x.shape)}")
    before, after = size // 2, size - 1 - size // 2
    rows = _reflect_index(x.shape[2], before, after, x.device)
    cols = _reflect_index(x.shape[3], before, after, x.device)
    padded = x.index_select(2, rows).index_select(3, cols)
    windows = padded.unfold(2, size, 1).unfold(3, size, 1)  # [N, C, H, W, k, k]
    flat = windows.reshape(*windows.shape[:4], size * size)
    return flat.sort(-1).values[..., (size * size) // 2]


@dataclass
class MedianConfig(TransformConfig):
    """``transform=median``: the k of the k x k window (>= 2)."""

    name: str = "median"
    size: int = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        require(
            self.size >= 2,
            "transform.size",
            f"must be >= 2 (a 1x1 median changes nothing), got {self.size}",
        )


class Median(InputTransform):
    config_type = MedianConfig
    differentiable = True

    def apply(self, x: Tensor) -> Tensor:
        return median_smooth(x, int(self.config.size))
