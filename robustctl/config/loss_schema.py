"""Schemas of the ``loss`` group (pure Python). One dataclass per option, registered in LOSS_SCHEMAS."""

from __future__ import annotations

from dataclasses import dataclass

from robustctl.config.validation import require as _require


@dataclass
class LossConfig:
    """Training objective: a classification term, optionally with embedding-geometry terms."""

    name: str = "ce"
    classification: str = "ce"
    weight: float = 1.0

    def __post_init__(self) -> None:
        _require(self.classification in ("ce", "rce"), "loss.classification", f"must be ce or rce, got {self.classification!r}")
        _require(self.weight > 0, "loss.weight", f"must be > 0, got {self.weight}")


LOSS_SCHEMAS: dict[str, type[LossConfig]] = {"ce": LossConfig}


