"""Adversarial attacks: a registry from method name to class, and the builders.

Every attack maps [0, 1] images to an :class:`AttackResult` ``(x_adv, success, pred, target)``
and attacks the model's prediction view (``predict_logits`` when present, else ``model(x)``).

    >>> attack = build("fgsm-0.1", model)            # an option of conf/attack/ (or a method name)
    >>> attack = build("pgd", model, eps=0.03, restarts=5)
    >>> attack = build_from_config(cfg.attack, model)
    >>> x_adv, success, pred, target = attack(x, y)
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from robustctl.attacks.base import Attack, AttackResult, BoundedAttack, model_device
from robustctl.attacks.bim import BIM
from robustctl.attacks.cw import CW
from robustctl.attacks.cw_hc import CWHighConfidence
from robustctl.attacks.deepfool import DeepFool
from robustctl.attacks.fgsm import FGSM
from robustctl.attacks.jsma import JSMA
from robustctl.attacks.metrics import distortion_metrics, per_example_distortions
from robustctl.attacks.pgd import PGD
from robustctl.config.attack_schema import ATTACK_SCHEMAS, attack_config
from robustctl.errors import ConfigError

# method name -> attack class (conf/attack/<option>.yaml -> schema.method -> class)
ATTACKS: dict[str, type[Attack]] = {
    cls.method: cls for cls in (FGSM, BIM, PGD, CW, CWHighConfidence, JSMA, DeepFool)
}


def build_from_config(cfg: Any, model: nn.Module) -> Attack:
    """Instantiate the attack an ``attack`` group config (an ATTACK_SCHEMAS dataclass) describes."""
    method = getattr(type(cfg), "method", None)
    if method not in ATTACKS:
        name = getattr(cfg, "name", cfg)
        raise ConfigError(f"attack: {name!r} is not an attack — valid: {', '.join(attack_options())}")
    return ATTACKS[method](model, **dataclasses.asdict(cfg))


def build(name: str, model: nn.Module, **params: Any) -> Attack:
    """Build option ``name`` of conf/attack (a method or a preset such as ``bim-0.1``) with overrides.

    Parameters go through the option's schema, so out-of-range values raise :class:`ConfigError`.
    """
    return build_from_config(attack_config(name, params), model)


def attack_options() -> list[str]:
    """Every buildable option name (methods and presets), sorted."""
    return sorted(name for name in ATTACK_SCHEMAS if name != "none")


__all__ = [
    "ATTACKS", "BIM", "CW", "PGD", "Attack", "AttackResult", "BoundedAttack", "CWHighConfidence", "DeepFool",
    "FGSM", "JSMA", "attack_options", "build", "build_from_config", "distortion_metrics", "model_device",
    "per_example_distortions",
]
