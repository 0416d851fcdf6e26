"""Training-time defenses: the ``train_defense`` config group's options (the taxonomy's
Category 2 defenses that make the network itself resist the perturbation).

``TRAIN_DEFENSES`` maps each option to the class that implements it (``none``: plain training);
:func:`train_defense_configs` gives each option's default config. :func:`build_train_defense`
returns the object the trainer asks for the training loss (``wrap_loss``) and, once per epoch,
for the function each batch goes through before the step (``for_epoch``; None: none).

    >>> defense = build_train_defense(cfg.train_defense)          # pgd_at: Madry et al.
    >>> loss_fn = defense.wrap_loss(loss_fn)
    >>> hook = defense.for_epoch(model, seed=cfg.trainer.seed, epoch=epoch)
    >>> xb = hook(xb, yb)                                         # before the training step

- ``fgsm_at``, ``pgd_at``: adversarial training (Goodfellow et al. 2015; Madry et al. 2018),
  adversarial.py;
- ``distill_teacher``, ``distillation``: defensive distillation (Papernot et al. 2016),
  distillation.py.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from robustctl.config.validation import NoneConfig
from robustctl.errors import ConfigError
from robustctl.train_defenses.adversarial import (
    AdversarialTraining,
    AdversarialTrainingConfig,
    BatchAdversary,
    epoch_seed,
)
from robustctl.train_defenses.distillation import (
    Distillation,
    DistillationConfig,
    TemperatureConfig,
    TemperatureTraining,
    teacher_config,
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
        # Papernot et al. 2016: teacher trained at temperature T, student on its soft labels
        "distill_teacher": TemperatureConfig(),
        "distillation": DistillationConfig(),
    }


# option -> the class that implements it (None: no training-time defense); presets of
# conf/train_defense/ (pgd_at-cifar10) are built by their config's type
TRAIN_DEFENSES: dict[str, type[Any] | None] = {
    "none": None,
    "fgsm_at": AdversarialTraining,
    "pgd_at": AdversarialTraining,
    "distill_teacher": TemperatureTraining,
    "distillation": Distillation,
}
_BY_CONFIG: dict[type, type[Any]] = {
    AdversarialTrainingConfig: AdversarialTraining,
    TemperatureConfig: TemperatureTraining,
    DistillationConfig: Distillation,
}


def _implementation(cfg: Any) -> type[Any] | None:
    if type(cfg) in _BY_CONFIG:
        return _BY_CONFIG[type(cfg)]
    name = getattr(cfg, "name", "none")
    if name not in TRAIN_DEFENSES:
        raise ConfigError(
            f"train_defense: unknown option {name!r} — "
            f"valid train_defense options: {', '.join(sorted(TRAIN_DEFENSES))}"
        )
    return TRAIN_DEFENSES[name]


def needs_teacher(cfg: Any) -> bool:
    """Whether the ``train_defense`` config trains a student (its run needs the teacher's)."""
    return getattr(_implementation(cfg), "needs_teacher", False)


# losses a distillation student can be trained with: they classify single images (no Siamese
# partners, no class centers), so the teacher's soft labels can replace their targets
DISTILLABLE_LOSSES = ("ce", "rce")


def check_with_loss(train_defense: Any, loss: Any) -> None:
    """Refuse, at composition, a training-time defense the loss cannot go with."""
    loss_name = getattr(loss, "name", "")
    if needs_teacher(train_defense) and loss_name not in DISTILLABLE_LOSSES:
        raise ConfigError(
            f"train_defense={train_defense.name} replaces the classification target with the "
            f"teacher's soft labels: it needs loss={' or loss='.join(DISTILLABLE_LOSSES)}, "
            f"got loss={loss_name}",
            hint="distill a CE (or RCE) model; other losses compose with fgsm_at / pgd_at",
        )


def build_train_defense(cfg: Any, teacher: nn.Module | None = None) -> Any:
    """The training-time defense of the ``train_defense`` config, or None for ``none`` (and for
    no config); ``teacher``: the trained teacher a student (``distillation``) learns from."""
    cls = _implementation(cfg)
    return None if cls is None else cls(cfg, teacher)


__all__ = [
    "TRAIN_DEFENSES",
    "AdversarialTraining",
    "AdversarialTrainingConfig",
    "BatchAdversary",
    "Distillation",
    "DistillationConfig",
    "TemperatureConfig",
    "TemperatureTraining",
    "DISTILLABLE_LOSSES",
    "build_train_defense",
    "check_with_loss",
    "epoch_seed",
    "needs_teacher",
    "teacher_config",
    "train_defense_configs",
]
