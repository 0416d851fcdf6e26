"""Seeded synthetic images for tests and smoke runs: one smooth random prototype per class plus
noise.

x = clip(prototype[y] + noise * eps, 0, 1), eps ~ N(0, I). Generated from ``dataset.split_seed``,
so the same config always yields the same tensors; classes are balanced.
"""

from __future__ import annotations

from pathlib import Path

import torch

from robustctl.config.schema import SyntheticDatasetConfig
from robustctl.data.base import RawSplit


def load_synthetic_split(cfg: SyntheticDatasetConfig, work_dir: str | Path) -> RawSplit:
    g = torch.Generator().manual_seed(cfg.split_seed)
    k, c, s = cfg.num_classes, cfg.channels, cfg.image_size
    coarse = torch.rand(k, c, max(s // 2, 2), max(s // 2, 2), generator=g)
    prototypes = torch.nn.functional.interpolate(
        coarse, size=(s, s), mode="bilinear", align_corners=False
    )
    y = torch.arange(cfg.num_samples) % k
    y = y[torch.randperm(cfg.num_samples, generator=g)]
    x = (prototypes[y] + cfg.noise * torch.randn(cfg.num_samples, c, s, s, generator=g)).clamp(0, 1)
    n_test = max(int(round(cfg.test_fraction * cfg.num_samples)), 1)
    return RawSplit(
        x[n_test:].contiguous(),
        y[n_test:].contiguous(),
        x[:n_test].contiguous(),
        y[:n_test].contiguous(),
        tuple(f"class{i}" for i in range(k)),
        source=f"robustctl:synthetic(split_seed={cfg.split_seed})",
    )
