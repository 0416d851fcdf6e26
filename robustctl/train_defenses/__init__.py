"""Training-time defenses: the ``train_defense`` config group's options (the taxonomy's
Category 2 defenses that make the network itself resist the perturbation).

:data:`OPTIONS` maps each option to its config and the class that implements it (``none``: plain
training), added by the module that implements it (every module of this package is imported
here); :func:`train_defense_configs` gives each option's default config. :func:`build_train_defense`
returns the object the trainer asks for the training loss (``wrap_loss``) and, once per epoch,
for the function each batch goes through before the step (``for_epoch``; None: none).

    >>> defense = build_train_defense(cfg.train_defense)          # pgd_at: Madry et al.
    >>> loss_fn = defense.wrap_loss(loss_fn)
    >>> hook = defense.for_epoch(model, seed=cfg.trainer.seed, epoch=epoch)
    >>> xb = hook(xb, yb)                                         # before the training step

- ``fgsm_at``, ``pgd_at``: adversarial training (Goodfellow et al. 2015; Madry et al. 2018),
  adversarial.py;
- ``trades``: TRADES (Zhang et al. 2019), trades.py;
- ``distill_teacher``, ``distillation``: defensive distillation (Papernot et al. 2016),
  distillation.py.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from torch import nn

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
from robustctl.train_defenses.registry import OPTIONS

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


def train_defense_configs() -> dict[str, Any]:
    """Every option of the ``train_defense`` group with its default config."""
    return OPTIONS.configs()


def _implementation(cfg: Any) -> type[Any] | None:
    """The class of a ``train_defense`` config: by its type (a preset of conf/train_defense/,
    ``pgd_at-cifar10``, is named after itself but built by its option's class), else by name."""
    by_type = {type(c): OPTIONS.implementation(n) for n, c in OPTIONS.configs().items()}
    if type(cfg) in by_type and by_type[type(cfg)] is not None:
        return by_type[type(cfg)]
    return OPTIONS.implementation(getattr(cfg, "name", "none"))


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
    "OPTIONS",
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
