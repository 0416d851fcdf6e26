"""Seeded synthetic images for tests and smoke runs: one smooth random prototype per class plus
noise.

x = clip(prototype[y] + noise * eps, 0, 1), eps ~ N(0, I). Generated from ``dataset.split_seed``,
so the same config always yields the same tensors; classes are balanced.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from robustctl.config.validation import require
from robustctl.data.base import OPTIONS, DatasetConfig, RawSplit


@dataclass
class SyntheticDatasetConfig(DatasetConfig):
    """Seeded Gaussian class prototypes plus noise (tests and smoke runs)."""

    num_samples: int = 1200
    num_classes: int = 4
    channels: int = 1
    image_size: int = 8
    noise: float = 0.15
    test_fraction: float = 0.25

    def __post_init__(self) -> None:
        super().__post_init__()
        require(
            self.num_samples >= 8, "dataset.num_samples", f"must be >= 8, got {self.num_samples}"
        )
        require(
            self.num_classes >= 2, "dataset.num_classes", f"must be >= 2, got {self.num_classes}"
        )
        require(self.channels in (1, 3), "dataset.channels", f"must be 1 or 3, got {self.channels}")
        require(self.image_size >= 4, "dataset.image_size", f"must be >= 4, got {self.image_size}")
        require(self.noise >= 0, "dataset.noise", f"must be >= 0, got {self.noise}")
        require(
            0 < self.test_fraction < 1,
            "dataset.test_fraction",
            f"must be in (0, 1), got {self.test_fraction}",
        )


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


OPTIONS.add(SyntheticDatasetConfig(name="synthetic"), load_synthetic_split)
