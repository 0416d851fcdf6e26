"""A run's training variant: what its training config departs from, in words, for the labels of
report columns and the ``variant`` tag (``ce`` vs ``ce (norm=none, transform=jpeg(quality=75))``).

The parts, joined by ", " ("" for the paper's setting):

- the loss options that depart from the paper's
  (:func:`~robustctl.losses.schema.loss_variant`);
- ``norm=<option>`` when the model's normalization is not batch norm;
- ``transform=<option>(<its fields>)`` for an input transform (``gradient=exact`` only when set);
- ``train_defense=<option>(<its fields>)`` for a training-time defense (adversarial training:
  the attack's parameters, and the attack and mix only when they depart from the option's
  defaults; distillation: the temperature).
"""

from __future__ import annotations

from typing import Any

from robustctl.losses.schema import loss_variant


def _fields(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())


def transform_label(node: dict[str, Any] | None) -> str:
    """``jpeg(quality=75)``; "" for no transform."""
    if not node or node.get("name", "none") == "none":
        return ""
    shown = {k: v for k, v in node.items() if k not in ("name", "gradient")}
    if node.get("gradient", "bpda") != "bpda":
        shown["gradient"] = node["gradient"]
    return f"{node['name']}({_fields(shown)})"


def train_defense_label(node: dict[str, Any] | None) -> str:
    """``pgd_at(eps=0.1, steps=7)``; "" for no training-time defense."""
    if not node or node.get("name", "none") == "none":
        return ""
    from robustctl.train_defenses import train_defense_configs

    options = train_defense_configs()
    base = node["name"].split("-", 1)[0]  # a preset (pgd_at-cifar10) compares with its option
    default = vars(options.get(node["name"], options.get(base, object())))
    shown: dict[str, Any] = {}
    for key, value in node.items():
        if key == "attack_params":
            shown.update(value or {})
        elif key != "name" and not (key in ("attack", "mix") and value == default.get(key)):
            shown[key] = value
    return f"{node['name']}({_fields(shown)})"


def training_variant(container: dict[str, Any]) -> str:
    """The training variant of a composed config (module docstring)."""
    parts = [loss_variant(container.get("loss") or {})]
    norm = (container.get("model") or {}).get("norm", "batch")
    if norm != "batch":
        parts.append(f"norm={norm}")
    if label := transform_label(container.get("transform")):
        parts.append(f"transform={label}")
    if label := train_defense_label(container.get("train_defense")):
        parts.append(f"train_defense={label}")
    return ", ".join(p for p in parts if p)
