"""Binary edge images: Sobel gradient magnitude and a fixed threshold (no Canny: no smoothing,
non-maximum suppression nor hysteresis), the same binary map repeated over the image's channels.

For images x [N, C, H, W] in [0, 1] and ``threshold`` t in [0, 1):

    g  = mean over the C channels of x                       (not a luma weighting)
    gx = g (*) [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]          (cross-correlation, i.e. right - left)
    gy = g (*) [[-1, -2, -1], [0, 0, 0], [1, 2, 1]]          (Gx transposed: bottom - top)
    m  = sqrt(gx^2 + gy^2) / sqrt(20)
    out[:, c] = 1 if m > t else 0,  for every channel c

with g padded by one pixel of replication (the edge pixel repeated) before the correlations, as
``scipy.ndimage.sobel(..., mode="nearest")`` does; so m is 0 on a constant image, borders included.
The kernels are applied in their separable form, Gx = [1, 2, 1]^T [-1, 0, 1] (smooth down the
columns, then difference across them), which is the same linear map; it makes equal neighbours
cancel exactly, so flat regions give exactly 0 rather than float noise that a threshold of 0
would count as edges.

Normalization: m^2 is a convex function of the nine pixels of a window, so its maximum over
[0, 1]^9 is at a binary window, where gx and gy are integers in [-4, 4]. |gx| = 4 needs the right
column all 1 and the left all 0, which leaves gy = 2 (g[2,1] - g[0,1]) in {-2, 0, 2}; likewise
|gy| = 4 leaves |gx| <= 2; otherwise |gx|, |gy| <= 3 and the magnitude is at most sqrt(18). So
the largest magnitude is |(4, 2)| = sqrt(20) = 2 sqrt(5) ~ 4.472 (e.g. the window
[[0, 0, 1], [0, 0, 1], [0, 1, 1]]). The often quoted 4 sqrt(2) = |(4, 4)| ~ 5.657 is not
attainable: dividing by it would leave m <= 0.79. Dividing by sqrt(20) makes m span exactly
[0, 1]; a unit step edge gives m = 4 / sqrt(20) ~ 0.894.

The threshold is a step function: its gradient is zero almost everywhere. Attacks see the
transform through BPDA with a soft threshold as the surrogate (:meth:`Edges.surrogate`),
sigmoid((m - t) / tau) with tau = ``SURROGATE_TEMPERATURE`` = 0.05 (magnitude units): the identity
is a poor approximation of an edge map (on digits PGD through it broke 13% of the images at
eps = 0.25, through the soft threshold 98%; tests/transforms/test_bpda_attack.py).
:func:`sobel_magnitude` is differentiable except where gx = gy = 0, where it returns the zero
subgradient instead of sqrt's NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from robustctl.config.validation import require
from robustctl.transforms.base import InputTransform, TransformConfig

# The largest Sobel magnitude of an image in [0, 1] (module docstring): |(4, 2)|.
MAX_MAGNITUDE = math.sqrt(20.0)
# tau of the soft threshold BPDA differentiates in place of the hard one (module docstring)
SURROGATE_TEMPERATURE = 0.05


def _check_images(x: Tensor) -> None:
    if x.dim() != 4 or not x.is_floating_point():
        raise ValueError(
            f"images must be a float tensor [N, C, H, W], got {x.dtype} of shape {tuple(x.shape)}"
        )


def _smooth_and_difference(padded: Tensor, dim: int) -> Tensor:
    """Of a padded [..., H + 2, W + 2] tensor: the central difference along ``dim`` (-1: columns,
    -2: rows) of its [1, 2, 1] smoothing along the other axis, [..., H, W]."""
    other = -3 - dim  # -1 <-> -2
    n = padded.shape[other]
    smooth = (
        padded.narrow(other, 0, n - 2)
        + 2 * padded.narrow(other, 1, n - 2)
        + padded.narrow(other, 2, n - 2)
    )
    m = smooth.shape[dim]
    return smooth.narrow(dim, 2, m - 2) - smooth.narrow(dim, 0, m - 2)


def sobel_gradients(gray: Tensor) -> tuple[Tensor, Tensor]:
    """(gx, gy) of single-channel images ``gray`` [N, 1, H, W]: the Sobel correlations with
    replicate padding, unnormalized (each in [-4, 4] for an image in [0, 1]). Computed in the
    separable form gx = ([1, 2, 1]^T smoothing) then ([-1, 0, 1] difference), as
    ``scipy.ndimage.sobel`` does: equal neighbours cancel exactly, so a constant image gives
    exactly 0 (a 3x3 convolution's summation order can leave ~1e-8)."""
    padded = F.pad(gray, (1, 1, 1, 1), mode="replicate")
    return _smooth_and_difference(padded, -1), _smooth_and_difference(padded, -2)


def sobel_magnitude(x: Tensor) -> Tensor:
    """m = sqrt(gx^2 + gy^2) / sqrt(20) in [0, 1], [N, 1, H, W], of the channel mean of images
    ``x`` [N, C, H, W] in [0, 1] (module docstring); computed in at least float32."""
    _check_images(x)
    work = x if x.dtype in (torch.float32, torch.float64) else x.float()
    gx, gy = sobel_gradients(work.mean(dim=1, keepdim=True))
    squared = gx**2 + gy**2
    positive = squared > 0
    # sqrt has an infinite derivative at 0: take it only where positive (zero subgradient at 0).
    root = torch.sqrt(torch.where(positive, squared, torch.ones_like(squared)))
    magnitude = torch.where(positive, root, torch.zeros_like(root)) / MAX_MAGNITUDE
    return magnitude.clamp(max=1.0)  # only float rounding of the channel mean can pass 1


def sobel_edges(x: Tensor, threshold: float) -> Tensor:
    """Binary edges of images ``x`` [N, C, H, W] in [0, 1]: 1.0 where the normalized Sobel
    magnitude of the channel mean exceeds ``threshold`` (in [0, 1)), else 0.0, the same map in
    every channel. Same shape, dtype and device as ``x``."""
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"sobel threshold must be in [0, 1), got {threshold!r}")
    edges = (sobel_magnitude(x) > threshold).to(x.dtype)
    return edges.repeat(1, x.shape[1], 1, 1)


@dataclass
class EdgesConfig(TransformConfig):
    """``transform=edges``: binary Sobel edge maps at ``threshold`` in [0, 1) of the normalized
    magnitude (a unit step edge has 0.894); the model trains and is tested on edge maps."""

    name: str = "edges"
    threshold: float = 0.2

    def __post_init__(self) -> None:
        super().__post_init__()
        require(
            0.0 <= self.threshold < 1.0,
            "transform.threshold",
            f"must be in [0, 1), got {self.threshold}",
        )


class Edges(InputTransform):
    config_type = EdgesConfig

    def apply(self, x: Tensor) -> Tensor:
        return sobel_edges(x, float(self.config.threshold))

    def surrogate(self, x: Tensor) -> Tensor:
        """sigmoid((m - t) / tau) in every channel: the edge map with a soft threshold."""
        soft = torch.sigmoid(
            (sobel_magnitude(x) - float(self.config.threshold)) / SURROGATE_TEMPERATURE
        )
        return soft.to(x.dtype).repeat(1, x.shape[1], 1, 1)
