"""Schemas of the ``defense`` group (pure Python)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from robustctl.config.attack_schema import NoneConfig
from robustctl.config.validation import require as _require


@dataclass
class KDEConfig:
    """Kernel-density detector on the embedding (Feinman et al. 2017; ``robustctl.defenses.kde``).

    ``bandwidth`` is sigma of the kernel exp(-||z - z'||^2 / sigma^2), or ``auto``: the sigma on
    the grid ``m * 10**linspace(log10(grid_min), log10(grid_max), grid_size)`` (m = median
    within-class distance of the kernel points) that maximizes the held-out log-likelihood;
    ``bandwidth_grid`` lists explicit sigmas instead. ``chunk_size`` bounds one block of
    (query, kernel point) entries; ``seed`` drives the per-class subset and held-out split.
    """

    name: str = "kde"
    per_class: int = 1000
    bandwidth: float | int | str = "auto"
    grid_min: float = 1e-3
    grid_max: float = 1.0
    grid_size: int = 31
    bandwidth_grid: list[float] | None = None
    holdout_fraction: float = 0.2
    chunk_size: int = 4194304
    seed: int = 0

    def __post_init__(self) -> None:
        _require(self.per_class >= 1, "defense.per_class", f"must be >= 1, got {self.per_class}")
        bw = self.bandwidth
        if isinstance(bw, str) and bw != "auto":
            try:
                bw = float(bw)
            except ValueError:
                bw = None  # type: ignore[assignment]
        ok = bw == "auto" or (isinstance(bw, (int, float)) and not isinstance(bw, bool) and math.isfinite(bw) and bw > 0)
        _require(ok, "defense.bandwidth", f"must be 'auto' or a positive float, got {self.bandwidth!r}")
        self.bandwidth = bw if bw == "auto" else float(bw)  # type: ignore[arg-type]
        _require(0 < self.grid_min < self.grid_max, "defense.grid_min",
                 f"need 0 < grid_min < grid_max, got {self.grid_min} and {self.grid_max}")
        _require(math.isfinite(self.grid_max), "defense.grid_max", f"must be finite, got {self.grid_max}")
        _require(self.grid_size >= 2, "defense.grid_size", f"must be >= 2, got {self.grid_size}")
        if self.bandwidth_grid is not None:
            grid = list(self.bandwidth_grid)
            _require(bool(grid) and all(math.isfinite(s) and s > 0 for s in grid), "defense.bandwidth_grid",
                     f"must be null or a non-empty list of positive floats, got {grid}")
        _require(0 < self.holdout_fraction < 1, "defense.holdout_fraction",
                 f"must be in (0, 1), got {self.holdout_fraction}")
        _require(self.chunk_size >= 1, "defense.chunk_size", f"must be >= 1, got {self.chunk_size}")


DEFENSE_SCHEMAS: dict[str, type[Any]] = {"none": NoneConfig, "kde": KDEConfig}
