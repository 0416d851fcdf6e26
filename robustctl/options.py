"""Every option of every config group, read from the packages that define them, and stored in
Hydra's ConfigStore.

Each package owns its group's options (:class:`~robustctl.config.registry.OptionRegistry`, or
its self-registering classes): an option is defined once, by its config dataclass beside the code
it configures, whose defaults and ``__post_init__`` checks are the only definition of the option.
:func:`register` stores them as ``<group>/<option>``, so ``group=option`` composes a typed node:
an unknown key or a wrong type is refused by Hydra at composition, an out-of-range value by
``__post_init__`` when :func:`robustctl.composition.validate` builds the dataclass. YAML files in
``conf/<group>/`` only add presets that extend a registered option (``defaults: [fgsm]`` +
``eps: 0.1``: the paper's ``fgsm-0.1``). :func:`check_across_groups` holds the rules that involve
two groups.
"""

from __future__ import annotations

from typing import Any

from robustctl import attacks, data, defenses, losses, models, train_defenses, transforms
from robustctl.config.schema import EvaluateConfig, TrackingConfig, TrainerConfig
from robustctl.config.validation import NoneConfig
from robustctl.threat_models.schema import ThreatModelConfig

GROUPS = (
    "dataset",
    "model",
    "loss",
    "trainer",
    "tracking",
    "evaluate",
    "attack",
    "defense",
    "threat_model",
    "transform",
    "train_defense",
)


def group_configs() -> dict[str, dict[str, Any]]:
    """``{group: {option: config instance}}`` for the registered (non-YAML) options."""
    return {
        "dataset": data.OPTIONS.configs(),
        "model": models.OPTIONS.configs(),
        "loss": losses.OPTIONS.configs(),
        "trainer": {"default": TrainerConfig()},
        "tracking": {"default": TrackingConfig()},
        "evaluate": {"default": EvaluateConfig()},
        "attack": {"none": NoneConfig(), **attacks.method_configs()},
        "defense": defenses.defense_configs(),
        "threat_model": {"none": NoneConfig(), "graybox": ThreatModelConfig()},
        "transform": transforms.transform_configs(),
        "train_defense": train_defenses.train_defense_configs(),
    }


_STORED: dict[int, tuple[tuple[str, str, str], ...]] = {}  # id(store) -> what it holds


def register() -> None:
    """Store every registered option in Hydra's ConfigStore (idempotent). Storing converts each
    dataclass to an OmegaConf node (a third of a composition's time), so it is skipped when the
    store already holds the same options with the same values."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    groups = group_configs()
    held = tuple(
        (group, name, repr(node))
        for group, options in groups.items()
        for name, node in options.items()
    )
    if _STORED.get(id(store)) == held:
        return
    for group, options in groups.items():
        for name, node in options.items():
            store.store(group=group, name=name, node=node)
    _STORED[id(store)] = held


def check_across_groups(groups: dict[str, Any]) -> None:
    """The rules that involve two groups' choices, checked at composition (each group's own
    ranges are its dataclass's): a training-time defense must go with the loss (distillation
    replaces the classification target, so it needs ``ce`` or ``rce``)."""
    train_defenses.check_with_loss(groups["train_defense"], groups["loss"])
