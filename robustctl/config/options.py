"""Every option of every config group, in one registry: group -> {option name: its config}.

Each option's config is a dataclass instance whose defaults and ``__post_init__`` checks are the
only definition of that option (the dataclasses live beside what they configure: attacks in
``robustctl/attacks/``, the detector in ``robustctl/defenses/kde.py``, the rest in this package).
:func:`register` stores them in Hydra's ConfigStore as ``<group>/<option>``, so ``group=option``
composes a typed node: an unknown key or a wrong type is refused by Hydra at composition, an
out-of-range value by ``__post_init__`` when :func:`robustctl.config.composition.validate` builds
the dataclass. YAML files in ``conf/<group>/`` only add presets that extend a registered option
(``defaults: [fgsm]`` + ``eps: 0.1``: the paper's ``fgsm-0.1``).
"""

from __future__ import annotations

from typing import Any

from robustctl.config.validation import NoneConfig

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
    from robustctl.attacks import method_configs
    from robustctl.config.loss_schema import LOSS_OPTIONS
    from robustctl.config.schema import (
        DATASET_OPTIONS,
        MODEL_OPTIONS,
        EvaluateConfig,
        TrackingConfig,
        TrainerConfig,
    )
    from robustctl.config.threat_model_schema import ThreatModelConfig
    from robustctl.defenses import defense_configs
    from robustctl.train_defenses import train_defense_configs
    from robustctl.transforms import transform_configs

    return {
        "dataset": dict(DATASET_OPTIONS),
        "model": dict(MODEL_OPTIONS),
        "loss": dict(LOSS_OPTIONS),
        "trainer": {"default": TrainerConfig()},
        "tracking": {"default": TrackingConfig()},
        "evaluate": {"default": EvaluateConfig()},
        "attack": {"none": NoneConfig(), **method_configs()},
        "defense": {"none": NoneConfig(), **defense_configs()},
        "threat_model": {"none": NoneConfig(), "graybox": ThreatModelConfig()},
        "transform": transform_configs(),
        "train_defense": train_defense_configs(),
    }


def register() -> None:
    """Store every registered option in Hydra's ConfigStore (idempotent)."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for group, options in group_configs().items():
        for name, node in options.items():
            store.store(group=group, name=name, node=node)
