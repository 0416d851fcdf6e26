"""Bit-depth reduction (Xu, Evans and Qi 2018; Guo et al. 2018): each pixel value x in [0, 1]
becomes round(x * (2^b - 1)) / (2^b - 1), b = ``bits``, rounding half to even (like ``np.rint``).
Rounding has a zero gradient almost everywhere: attacks see it through BPDA."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from robustctl.config.validation import require
from robustctl.transforms.base import InputTransform, TransformConfig


def bit_depth(x: Tensor, bits: int) -> Tensor:
    """x -> round(x * (2^bits - 1)) / (2^bits - 1), rounding half to even (like ``np.rint``)."""
    levels = float(2**bits - 1)
    return torch.round(x * levels) / levels


@dataclass
class BitDepthConfig(TransformConfig):
    """``transform=bit_depth``: ``bits`` per channel (1..16; Xu et al.: 1 for MNIST, 5 for
    CIFAR-10)."""

    name: str = "bit_depth"
    bits: int = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        require(1 <= self.bits <= 16, "transform.bits", f"must be in 1..16, got {self.bits}")


class BitDepth(InputTransform):
    config_type = BitDepthConfig

    def apply(self, x: Tensor) -> Tensor:
        return bit_depth(x, int(self.config.bits))
