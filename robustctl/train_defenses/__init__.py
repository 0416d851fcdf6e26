"""Training-time defenses: the ``train_defense`` config group's options (the taxonomy's
Category 2 defenses that make the network itself resist the perturbation).

``TRAIN_DEFENSES`` maps each option to its default config (``none``: train on clean batches
only). :func:`build_train_defense` returns the object the trainer asks, once per epoch, for the
function that rewrites each batch (``None`` for ``none``).

    >>> defense = build_train_defense(cfg.train_defense)          # pgd_at: Madry et al.
    >>> adversary = defense.for_epoch(model, seed=cfg.trainer.seed, epoch=epoch)
    >>> xb = adversary(xb, yb)                                    # before the training step
"""

from __future__ import annotations

from typing import Any

from robustctl.config.validation import NoneConfig
from robustctl.errors import ConfigError
from robustctl.train_defenses.adversarial import (
    AdversarialTraining,
    AdversarialTrainingConfig,
    BatchAdversary,
    epoch_seed,
)


def train_defense_configs() -> dict[str, Any]:
    """Every option of the ``train_defense`` group with its default config: the registry
    :mod:`robustctl.config.options` stores in Hydra."""
    return {
        "none": NoneConfig(),
        # Goodfellow et al. 2015: FGSM examples for half of each batch
        "fgsm_at": AdversarialTrainingConfig(
            name="fgsm_at", attack="fgsm", attack_params={"eps": 0.1}, mix=0.5
        ),
        # Madry et al. 2018: every example replaced by its PGD (random start) example
        "pgd_at": AdversarialTrainingConfig(),
    }


# option -> the class that implements it (None: no training-time defense)
TRAIN_DEFENSES: dict[str, type[AdversarialTraining] | None] = {
    "none": None,
    "fgsm_at": AdversarialTraining,
    "pgd_at": AdversarialTraining,
}


def build_train_defense(cfg: Any) -> AdversarialTraining | None:
    """The training-time defense of the ``train_defense`` config, or None for ``none`` (and for
    no config)."""
    name = getattr(cfg, "name", "none")
    if name not in TRAIN_DEFENSES:
        raise ConfigError(
            f"train_defense: unknown option {name!r} — "
            f"valid train_defense options: {', '.join(sorted(TRAIN_DEFENSES))}"
        )
    cls = TRAIN_DEFENSES[name]
    return None if cls is None else cls(cfg)


__all__ = [
    "TRAIN_DEFENSES",
    "AdversarialTraining",
    "AdversarialTrainingConfig",
    "BatchAdversary",
    "build_train_defense",
    "epoch_seed",
    "train_defense_configs",
]
