"""Schemas of the ``threat_model`` group (pure Python): which evaluation stages run, and how.

Stages (PDM Appendix D, SPEC section 8):
- ``graybox``: the attacker knows the model, not the detector: run ``attacks`` and score them with
  the detector (success rate, distortions, detection AUC), plus resiliency curves.
- ``whitebox``: the attacker also knows the detector: ``cw_wb`` through model + KDE.
- ``blackbox``: the attacker distils a proxy from the target's outputs, attacks proxy + its own
  KDE with ``cw_wb`` and transfers the examples.
Options ``graybox``, ``whitebox``, ``blackbox`` run one stage each; ``all`` runs the three.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from robustctl.config.attack_schema import NoneConfig, attack_config
from robustctl.config.validation import require as _require

STAGES = ("graybox", "whitebox", "blackbox")
TABLE2_ATTACKS = ["fgsm-0.05", "fgsm-0.1", "bim-0.05", "bim-0.1", "cw", "cw_hc", "jsma"]


@dataclass
class WhiteboxConfig:
    """``cw_wb`` parameters (SPEC section 7): C&W-L2 plus the KDE density term, per-example threshold."""

    binary_steps: int = 3
    steps: int = 1000
    lr: float = 0.01
    initial_const: float = 1.0
    confidence: float = 0.0
    threshold: str = "per_example"  # per_example (clean counterpart's score) | detector (global FPR threshold)
    fpr: float = 0.05               # false-positive rate of the global threshold
    density_weight: float = 1.0


@dataclass
class BlackboxConfig:
    """Proxy trained by distillation on the target's outputs (PDM Appendix D)."""

    proxy_model: str = "resnet32"
    mode: str = "soft"              # soft (temperature) | hard (argmax labels)
    temperature: float = 4.0
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.1


@dataclass
class ThreatModelConfig:
    name: str = "graybox"
    stages: list[str] = field(default_factory=lambda: ["graybox"])
    num_samples: int = 500          # test images attacked (seeded subset); 0 = all
    batch_size: int = 256
    min_pairs: int = 10             # fewer (clean-correct, attack-succeeded) pairs -> no AUC, a reason
    attacks: list[str] = field(default_factory=lambda: list(TABLE2_ATTACKS))
    attack_params: dict[str, Any] = field(default_factory=dict)  # per-attack overrides, e.g. {cw_hc: {steps: 100}}
    resiliency_attacks: list[str] = field(default_factory=lambda: ["fgsm", "bim"])
    resiliency_eps: list[float] = field(default_factory=lambda: [0.025, 0.05, 0.075, 0.1, 0.125, 0.15, 0.175, 0.2])
    seed: int = 0
    whitebox: WhiteboxConfig = field(default_factory=WhiteboxConfig)
    blackbox: BlackboxConfig = field(default_factory=BlackboxConfig)

    def __post_init__(self) -> None:
        bad = [s for s in self.stages if s not in STAGES]
        _require(not bad and len(self.stages) > 0, "threat_model.stages", f"must be a non-empty subset of {', '.join(STAGES)}; got {list(self.stages)}")
        _require(self.num_samples >= 0, "threat_model.num_samples", f"must be >= 0 (0 = all), got {self.num_samples}")
        _require(self.batch_size >= 1, "threat_model.batch_size", f"must be >= 1, got {self.batch_size}")
        _require(self.min_pairs >= 2, "threat_model.min_pairs", f"must be >= 2, got {self.min_pairs}")
        _require(all(0 < e <= 1 for e in self.resiliency_eps), "threat_model.resiliency_eps", f"must lie in (0, 1], got {list(self.resiliency_eps)}")
        for name in self.attacks:
            attack_config(name, key="threat_model.attacks")
        for name, params in self.attack_params.items():
            attack_config(name, params, key=f"threat_model.attack_params.{name}")
        wb, bb = self.whitebox, self.blackbox
        _require(wb.binary_steps >= 1 and wb.steps >= 1, "threat_model.whitebox.steps", "binary_steps and steps must be >= 1")
        _require(wb.lr > 0 and wb.initial_const > 0, "threat_model.whitebox.lr", "lr and initial_const must be > 0")
        _require(wb.threshold in ("per_example", "detector"), "threat_model.whitebox.threshold", f"must be per_example or detector, got {wb.threshold!r}")
        _require(0 < wb.fpr < 1, "threat_model.whitebox.fpr", f"must be in (0, 1), got {wb.fpr}")
        _require(bb.mode in ("soft", "hard"), "threat_model.blackbox.mode", f"must be soft or hard, got {bb.mode!r}")
        _require(bb.temperature > 0, "threat_model.blackbox.temperature", f"must be > 0, got {bb.temperature}")
        _require(bb.epochs >= 1 and bb.batch_size >= 1 and bb.lr > 0, "threat_model.blackbox.epochs", "epochs, batch_size must be >= 1 and lr > 0")
        _require(bb.proxy_model in ("resnet20", "resnet32", "resnet56"), "threat_model.blackbox.proxy_model", f"must be resnet20, resnet32 or resnet56; got {bb.proxy_model!r}")


THREAT_MODEL_SCHEMAS: dict[str, type[Any]] = {
    "none": NoneConfig, "graybox": ThreatModelConfig, "whitebox": ThreatModelConfig,
    "blackbox": ThreatModelConfig, "all": ThreatModelConfig, "quick": ThreatModelConfig,
}
