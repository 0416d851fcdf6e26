"""Ideal low-pass filter in the 2-D DFT domain (the frequency-domain smoothing of input-transform
defenses): each image and channel keeps the spatial frequencies within a disc and loses the rest.

For one channel g [H, W] of an image in [0, 1] and ``keep`` in (0, 1]:

    G        = fft2(g)                                 (torch.fft.fft2 over H and W)
    f_y, f_x = fftfreq(H), fftfreq(W)                  (cycles / pixel, in [-0.5, 0.5))
    M[u, v]  = 1 if sqrt(f_y[u]^2 + f_x[v]^2) <= keep / 2 else 0
    out      = clamp(Re(ifft2(M G)), 0, 1)

The disc's radius is keep / 2 cycles per pixel: keep = 1 reaches the Nyquist frequency 0.5 along
each axis, so it keeps every frequency except the "corners" where f_y^2 + f_x^2 > 1/4 (for an
8 x 8 image: the 17 of 64 DFT bins with |k_y|^2 + |k_x|^2 > 16, k the signed bin index; it is not
the identity). A radius tie counts as kept (the comparison allows 1e-9 for rounding in f).

Real output: M must be Hermitian-symmetric, M[u, v] = M[-u mod H, -v mod W]. fftfreq puts the
Nyquist bin of an even size at -0.5, with no +0.5 partner, but that bin is its own mirror
(-H/2 = H/2 mod H), and M depends on f only through f^2, which is the same for a bin and its
mirror; so M is symmetric and ifft2(M G) is real up to rounding (the ``.real`` drops an
imaginary part ~1e-7 of the real one in float32, ~1e-16 in float64).

Before the clamp the map is linear and shift-invariant (a circular convolution with a real,
even kernel), so its Jacobian is symmetric and autograd gives the exact gradient
(``differentiable``); the clamp passes no gradient where it clips. The DFT treats the image as
periodic: energy near one edge leaks to the opposite edge (no padding; a departure from filters
that pad, and the standard behaviour of DFT filtering).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from robustctl.config.validation import require
from robustctl.transforms.base import InputTransform, TransformConfig

# Slack in the radius comparison, so that a frequency exactly on the disc's rim counts as kept
# whatever the rounding of fftfreq (|f| <= 0.5, so 1e-9 is far below the gap between two bins).
_RIM_SLACK = 1e-9


def _check_keep(keep: float) -> None:
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"lowpass keep must be in (0, 1], got {keep!r}")


def lowpass_mask(
    height: int, width: int, keep: float, device: torch.device | None = None
) -> Tensor:
    """The boolean [H, W] DFT mask M[u, v] = sqrt(f_y[u]^2 + f_x[v]^2) <= keep / 2, in
    ``torch.fft.fft2``'s bin order (module docstring)."""
    _check_keep(keep)
    fy = torch.fft.fftfreq(height, dtype=torch.float64, device=device)
    fx = torch.fft.fftfreq(width, dtype=torch.float64, device=device)
    radius = torch.sqrt(fy.unsqueeze(1) ** 2 + fx.unsqueeze(0) ** 2)
    return radius <= keep * 0.5 + _RIM_SLACK


def lowpass_complex(x: Tensor, keep: float) -> Tensor:
    """ifft2(M fft2(x)) of images ``x`` [N, C, H, W], before the real part and the clamp: a
    complex tensor whose imaginary part is rounding noise (module docstring)."""
    if x.dim() != 4 or not x.is_floating_point():
        raise ValueError(
            f"images must be a float tensor [N, C, H, W], got {x.dtype} of shape {tuple(x.shape)}"
        )
    work = x if x.dtype in (torch.float32, torch.float64) else x.float()
    mask = lowpass_mask(x.shape[-2], x.shape[-1], keep, device=x.device)
    return torch.fft.ifft2(torch.fft.fft2(work) * mask)


def lowpass(x: Tensor, keep: float) -> Tensor:
    """Ideal low-pass of images ``x`` [N, C, H, W] in [0, 1]: clamp(Re(ifft2(M fft2(x))), 0, 1)
    with M the disc of radius ``keep`` / 2 cycles per pixel, ``keep`` in (0, 1] (module
    docstring). Same shape, dtype and device as ``x``."""
    return lowpass_complex(x, keep).real.clamp(0.0, 1.0).to(x.dtype)


@dataclass
class LowpassConfig(TransformConfig):
    """``transform=lowpass``: ``keep`` in (0, 1], the disc's radius in units of half a cycle per
    pixel (the Nyquist frequency). The filter is linear, so attacks always get its exact gradient
    (``gradient`` is not consulted)."""

    name: str = "lowpass"
    keep: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        require(0.0 < self.keep <= 1.0, "transform.keep", f"must be in (0, 1], got {self.keep}")


class Lowpass(InputTransform):
    config_type = LowpassConfig
    differentiable = True

    def apply(self, x: Tensor) -> Tensor:
        return lowpass(x, float(self.config.keep))
