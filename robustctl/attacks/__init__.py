"""Adversarial attacks: the ``attack`` config group's options and their implementations.

Each attack is one module holding its config dataclass (defaults and valid ranges, the single
definition of its options) and its update rule; every module of this package is imported here and
each attack class registers itself in :data:`ATTACKS` under its ``method`` name, so adding an
attack is adding one file (plus, for a paper preset, one YAML file in ``conf/attack/``). The
options of ``conf/attack/`` are every method plus the paper presets, YAML files that extend a
method's config (``fgsm-0.1.yaml``: ``defaults: [fgsm]``, ``eps: 0.1``).

Every attack maps [0, 1] images to an :class:`AttackResult` ``(x_adv, success, pred, target)``
and attacks the model's prediction view (``predict_logits`` when present, else ``model(x)``).

    >>> attack = build("fgsm-0.1", model)            # an option of conf/attack/ (or a method name)
    >>> attack = build("pgd", model, eps=0.03, restarts=5)
    >>> attack = build_from_config(cfg.attack, model)
    >>> x_adv, success, pred, target = attack(x, y)
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

from torch import nn

from robustctl.attacks.base import ATTACKS, Attack, AttackConfig, AttackResult, BoundedAttack
from robustctl.attacks.bim import BIM, BimConfig
from robustctl.attacks.cw import CW, CwConfig
from robustctl.attacks.cw_hc import CwHcConfig, CWHighConfidence
from robustctl.attacks.deepfool import DeepFool, DeepFoolConfig
from robustctl.attacks.fgsm import FGSM, FgsmConfig
from robustctl.attacks.jsma import JSMA, JsmaConfig
from robustctl.attacks.metrics import distortion_metrics, per_example_distortions
from robustctl.attacks.pgd import PGD, PgdConfig
from robustctl.errors import ConfigError


def _import_every_attack_module() -> None:
    """Import each module of this package, so an attack registers itself by being a file here."""
    import importlib
    import pkgutil

    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


_import_every_attack_module()


def method_configs() -> dict[str, AttackConfig]:
    """Each attack method of the ``attack`` group -> its default config (what Hydra stores)."""
    return {method: cls.config_type() for method, cls in ATTACKS.items()}


def _attack_dir() -> Path:
    from robustctl.config.paths import config_dir

    return config_dir() / "attack"


def presets() -> dict[str, tuple[str, dict[str, Any]]]:
    """Paper presets of ``conf/attack/``: option name -> (the method it extends, its values).

    The files are parsed once per state of the folder (names and modification times), not on
    every lookup: validating a threat model looks up each of its attacks."""
    folder = _attack_dir()
    stamp = tuple((p.name, p.stat().st_mtime_ns) for p in sorted(folder.glob("*.yaml")))
    return dict(_read_presets(folder, stamp))


@functools.lru_cache(maxsize=4)
def _read_presets(
    folder: Path, stamp: tuple[tuple[str, int], ...]
) -> dict[str, tuple[str, dict[str, Any]]]:
    from omegaconf import OmegaConf

    found = {}
    for path in sorted(folder.glob("*.yaml")):
        node = OmegaConf.to_container(OmegaConf.load(path), resolve=True) or {}
        bases = [d for d in node.pop("defaults", []) if d != "_self_"]
        if len(bases) == 1 and bases[0] in ATTACKS:
            found[path.stem] = (bases[0], node)
    return found


def attack_options() -> list[str]:
    """Every buildable option name (methods and presets), sorted."""
    return sorted([*method_configs(), *presets()])


def attack_config(
    name: str, params: dict[str, Any] | None = None, key: str = "attack"
) -> AttackConfig:
    """The config of attack option ``name`` (a method or a preset) with ``params`` applied,
    validated.

    An unknown option, an unknown parameter or an out-of-range value raises :class:`ConfigError`
    naming ``key`` (``attack`` for the group, ``threat_model.attack_params.<name>`` for per-attack
    overrides), so a bad attack list is refused at composition, before any training.
    """
    methods, found = method_configs(), presets()
    if name in methods:
        schema, values = type(methods[name]), {}
    elif name in found:
        method, values = found[name]
        schema = ATTACKS[method].config_type
    else:
        raise ConfigError(
            f"{key}: unknown option {name!r} — valid attack options: {', '.join(attack_options())}"
        )
    valid = [f.name for f in dataclasses.fields(schema) if f.name != "name"]
    unknown = sorted(set(params or {}) - set(valid))
    if unknown:
        raise ConfigError(
            f"unknown key(s) {key}.{f', {key}.'.join(unknown)} for {name} — "
            f"valid keys: {', '.join(valid)}"
        )
    try:
        return schema(**{**values, "name": name, **dict(params or {})})
    except ConfigError as exc:  # the schema names its keys attack.<key>; say where they were set
        if key == "attack" or not exc.message.startswith("attack."):
            raise
        raise ConfigError(key + exc.message[len("attack") :], hint=exc.hint) from exc


def check_attack_choice(name: str, params: Any, key: str) -> None:
    """Refuse, at composition, a config's choice of attack: ``<key>`` must be an attack option
    and ``<key>_params`` a mapping of its parameters in range (:func:`attack_config`). For the
    configs that run an attack of their own (detectors fitted on adversarial examples,
    adversarial training)."""
    from robustctl.config.validation import require

    options = attack_options()
    require(name in options, key, f"unknown attack option {name!r} — valid: {', '.join(options)}")
    require(
        hasattr(params, "items"),
        f"{key}_params",
        f"must be a mapping of attack parameters, got {params!r}",
    )
    attack_config(name, dict(params), key=f"{key}_params")


def build_from_config(cfg: Any, model: nn.Module) -> Attack:
    """Instantiate the attack an ``attack`` group config (an attack's config dataclass)
    describes."""
    for cls in ATTACKS.values():
        if type(cfg) is cls.config_type:
            return cls(model, cfg)
    name = getattr(cfg, "name", cfg)
    raise ConfigError(f"attack: {name!r} is not an attack — valid: {', '.join(attack_options())}")


def build(name: str, model: nn.Module, **params: Any) -> Attack:
    """Build option ``name`` of conf/attack (a method or a preset such as ``bim-0.1``) with
    overrides.

    Parameters go through the option's config, so out-of-range values raise :class:`ConfigError`.
    """
    return build_from_config(attack_config(name, params), model)


__all__ = [
    "ATTACKS",
    "BIM",
    "CW",
    "PGD",
    "Attack",
    "AttackConfig",
    "AttackResult",
    "BimConfig",
    "BoundedAttack",
    "CWHighConfidence",
    "CwConfig",
    "CwHcConfig",
    "DeepFool",
    "DeepFoolConfig",
    "FGSM",
    "FgsmConfig",
    "JSMA",
    "JsmaConfig",
    "PgdConfig",
    "attack_config",
    "attack_options",
    "build",
    "build_from_config",
    "check_attack_choice",
    "distortion_metrics",
    "method_configs",
    "per_example_distortions",
    "presets",
]
