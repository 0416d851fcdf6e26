"""Distortion metrics of adversarial examples (docs/metrics.md), in [0, 1] pixel space.

For one example with delta = x' - x over its n = C*H*W input values::

    l2         = ||delta||_2
    distortion = ||delta||_2 / sqrt(n)          (the PDM paper's normalized distortion, d)
    linf       = max_i |delta_i|
    l0         = #{i : |delta_i| > l0_tol} / n  (fraction of changed values)

The reported value of each is its mean over the *adversarial examples*: the examples selected by
``mask`` (the gray-box suite passes "attack succeeded and the clean example was classified
correctly", the same examples the detection AUC uses). With no selected example every mean is NaN.
``l0_tol`` (default 1e-4, far below one 8-bit grey level) keeps float round-off, e.g. C&W's tanh
round trip, from counting as a change.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

DISTORTION_KEYS = ("distortion", "l2", "linf", "l0")


def per_example_distortions(x: Tensor, x_adv: Tensor, l0_tol: float = 1e-4) -> dict[str, Tensor]:
    """Each metric per example: {key: [N] float tensor} for key in DISTORTION_KEYS."""
    if x.shape != x_adv.shape:
        raise ValueError(f"x and x_adv differ in shape: {tuple(x.shape)} vs {tuple(x_adv.shape)}")
    delta = (x_adv.detach().double() - x.detach().double()).flatten(1)
    n = delta.shape[1]
    l2 = delta.norm(dim=1)
    return {
        "distortion": l2 / math.sqrt(n),
        "l2": l2,
        "linf": delta.abs().amax(1) if n else torch.zeros(len(delta), dtype=delta.dtype),
        "l0": (delta.abs() > l0_tol).double().mean(1),
    }


def distortion_metrics(
    x: Tensor, x_adv: Tensor, mask: Tensor | None = None, l0_tol: float = 1e-4
) -> dict[str, float]:
    """Mean of each metric over the examples in ``mask`` (all when None): {key: float}."""
    per = per_example_distortions(x, x_adv, l0_tol)
    mask = torch.ones(len(x), dtype=torch.bool) if mask is None else mask.detach().cpu().bool()
    count = int(mask.sum())
    return {
        key: (float(value.cpu()[mask].mean()) if count else float("nan"))
        for key, value in per.items()
    }
