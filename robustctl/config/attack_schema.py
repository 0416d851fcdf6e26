"""Schemas of the ``attack`` group (pure Python). One dataclass per option, registered in ATTACK_SCHEMAS.

Each option's fields are the keyword arguments of its attack class in ``robustctl/attacks/``
(``method`` names the class, a class attribute rather than a field, so a preset such as
``fgsm-0.1`` is a subclass that only changes defaults). ``conf/attack/<option>.yaml`` sets the same
values; ``robustctl.attacks.build_from_config(cfg, model)`` instantiates the attack.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from robustctl.config.validation import require as _require
from robustctl.errors import ConfigError

TARGET_MODES = ("none", "random", "least_likely")


@dataclass
class NoneConfig:
    """The ``none`` option of a group that later work fills."""

    name: str = "none"


@dataclass
class AttackConfig:
    """Shared by every attack: ``targeted`` is none | random | least_likely; ``seed`` seeds its RNG."""

    method: ClassVar[str] = ""
    target_modes: ClassVar[tuple[str, ...]] = TARGET_MODES

    name: str = ""
    targeted: str = "none"
    seed: int | None = 0

    def __post_init__(self) -> None:
        _require(self.targeted in self.target_modes, "attack.targeted",
                 f"{self.method} supports {', '.join(self.target_modes)}; got {self.targeted!r}")

    def _positive(self, *keys: str) -> None:
        for key in keys:
            value = getattr(self, key)
            _require(value is not None and value > 0, f"attack.{key}", f"must be > 0, got {value}")


@dataclass
class FgsmConfig(AttackConfig):
    """FGSM (Goodfellow et al.): x + eps * sign(grad_x CE), Linf budget eps."""

    method: ClassVar[str] = "fgsm"
    name: str = "fgsm"
    eps: float = 0.05

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(0 < self.eps <= 1, "attack.eps", f"must be in (0, 1], got {self.eps}")


@dataclass
class BimConfig(FgsmConfig):
    """BIM (Kurakin et al.): iterated FGSM projected to the eps-ball; alpha null = eps / steps."""

    method: ClassVar[str] = "bim"
    name: str = "bim"
    steps: int = 10
    alpha: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self._positive("steps")
        _require(self.alpha is None or self.alpha > 0, "attack.alpha", f"must be > 0 or null, got {self.alpha}")


@dataclass
class PgdConfig(BimConfig):
    """PGD (Madry et al.): BIM with random start and restarts, Linf or L2; alpha null = 2.5 eps / steps."""

    method: ClassVar[str] = "pgd"
    name: str = "pgd"
    norm: str = "linf"
    random_start: bool = True
    restarts: int = 1

    def __post_init__(self) -> None:
        AttackConfig.__post_init__(self)
        _require(self.norm in ("linf", "l2"), "attack.norm", f"must be linf or l2, got {self.norm!r}")
        _require(self.eps > 0 and (self.norm == "l2" or self.eps <= 1), "attack.eps",
                 f"must be > 0 (and <= 1 for linf), got {self.eps}")
        self._positive("steps", "restarts")
        _require(self.alpha is None or self.alpha > 0, "attack.alpha", f"must be > 0 or null, got {self.alpha}")


@dataclass
class CwConfig(AttackConfig):
    """Carlini-Wagner L2: tanh box, Adam, per-example binary search over c (PDM: 9 steps x 10 iterations)."""

    method: ClassVar[str] = "cw"
    name: str = "cw"
    binary_steps: int = 9
    steps: int = 10
    confidence: float = 0.0
    lr: float = 0.1               # 10 iterations: a 0.01 step barely moves (attack/cw.py docstring)
    c_init: float = 0.01
    abort_early: bool = True
    box_shrink: float = 1e-6

    def __post_init__(self) -> None:
        super().__post_init__()
        self._positive("binary_steps", "steps", "lr", "c_init")
        _require(self.confidence >= 0, "attack.confidence", f"must be >= 0, got {self.confidence}")
        _require(0 <= self.box_shrink < 1, "attack.box_shrink", f"must be in [0, 1), got {self.box_shrink}")


@dataclass
class CwHcConfig(CwConfig):
    """High-confidence C&W (PDM's C&W-hc): 9 binary steps, 1000 iterations, confidence 10."""

    method: ClassVar[str] = "cw_hc"
    name: str = "cw_hc"
    steps: int = 1000
    confidence: float = 10.0
    lr: float = 0.01              # Carlini's step for a 1000-iteration budget


@dataclass
class JsmaConfig(AttackConfig):
    """JSMA (Papernot et al.): saliency-map pixel pairs toward a random target != y."""

    method: ClassVar[str] = "jsma"
    target_modes: ClassVar[tuple[str, ...]] = ("random", "least_likely")
    name: str = "jsma"
    targeted: str = "random"
    steps: int = 100
    gamma: float = 0.1
    theta: float = 1.0
    max_pair_chunk: int = 2 ** 22

    def __post_init__(self) -> None:
        super().__post_init__()
        self._positive("steps", "max_pair_chunk")
        _require(0 < self.gamma <= 1, "attack.gamma", f"must be in (0, 1], got {self.gamma}")
        _require(-1 <= self.theta <= 1 and self.theta != 0, "attack.theta", f"must be in [-1, 1] and != 0, got {self.theta}")


@dataclass
class DeepFoolConfig(AttackConfig):
    """DeepFool (Moosavi-Dezfooli et al.): steps to the nearest linearized boundary; untargeted only."""

    method: ClassVar[str] = "deepfool"
    target_modes: ClassVar[tuple[str, ...]] = ("none",)
    name: str = "deepfool"
    steps: int = 50
    overshoot: float = 0.02
    candidates: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self._positive("steps")
        _require(self.overshoot >= 0, "attack.overshoot", f"must be >= 0, got {self.overshoot}")
        _require(self.candidates is None or self.candidates >= 2, "attack.candidates",
                 f"must be >= 2 or null, got {self.candidates}")


# ------------------------------------------------------------------ paper presets (PDM Table 5)
@dataclass
class Fgsm005Config(FgsmConfig):
    name: str = "fgsm-0.05"
    eps: float = 0.05


@dataclass
class Fgsm01Config(FgsmConfig):
    name: str = "fgsm-0.1"
    eps: float = 0.1


@dataclass
class Bim005Config(BimConfig):
    name: str = "bim-0.05"
    eps: float = 0.05


@dataclass
class Bim01Config(BimConfig):
    name: str = "bim-0.1"
    eps: float = 0.1


@dataclass
class PgdL2Config(PgdConfig):
    name: str = "pgd_l2"
    norm: str = "l2"
    eps: float = 1.0


# option name (the YAML's ``name`` and file stem) -> schema
ATTACK_SCHEMAS: dict[str, type[Any]] = {
    schema.name: schema  # type: ignore[attr-defined]
    for schema in (NoneConfig, FgsmConfig, Fgsm005Config, Fgsm01Config, BimConfig, Bim005Config, Bim01Config,
                   PgdConfig, PgdL2Config, CwConfig, CwHcConfig, JsmaConfig, DeepFoolConfig)
}


def attack_config(name: str, params: Mapping[str, Any] | None = None, key: str = "attack") -> Any:
    """The schema of attack option ``name`` with ``params`` applied, validated.

    An unknown option, an unknown parameter or an out-of-range value raises :class:`ConfigError`
    naming ``key`` (``attack`` for the group, ``threat_model.attack_params.<name>`` for per-attack
    overrides), so a bad attack list is refused at composition, before any training.
    """
    schema = ATTACK_SCHEMAS.get(name)
    if schema is None or name == "none":
        options = sorted(n for n in ATTACK_SCHEMAS if n != "none")
        raise ConfigError(f"{key}: unknown option {name!r} — valid: {', '.join(options)}")
    valid = [f.name for f in fields(schema) if f.name != "name"]
    unknown = sorted(set(params or {}) - set(valid))
    if unknown:
        raise ConfigError(f"unknown key(s) {key}.{f', {key}.'.join(unknown)} for {name} — valid keys: {', '.join(valid)}")
    try:
        return schema(**dict(params or {}))
    except ConfigError as exc:   # the schema names its keys attack.<key>; say where they were set
        if key == "attack" or not exc.message.startswith("attack."):
            raise
        raise ConfigError(key + exc.message[len("attack"):], hint=exc.hint) from exc
