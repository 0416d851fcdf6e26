"""Adversarial training (Goodfellow, Shlens and Szegedy 2015, "Explaining and harnessing
adversarial examples"; Madry et al. 2018, "Towards deep learning models resistant to adversarial
attacks"): each training batch is partly replaced by adversarial examples of the model being
trained, so the training objective becomes

    min_theta  E_(x, y) [ (1 - m) L(f(x), y) + m L(f(x'), y) ],   x' = A(f_theta, x, y)

with m = ``mix`` the fraction of each batch replaced (the first round(m n) examples of a shuffled
batch of n; m = 1 is Madry et al.'s saddle-point objective, m = 0.5 Goodfellow et al.'s equal
weighting) and A the attack option ``attack`` with ``attack_params`` (any option of the ``attack``
group: ``fgsm`` is FGSM training, ``pgd`` with random start PGD / "Madry" training). L is the
run's own loss (cross-entropy, RCE, PDM, ...): the defense composes with any loss. With a loss
that draws Siamese partners (PDM), the partners stay clean.

The attack crafts x' on the model's prediction view (``logit_sign * Z``, what the model predicts)
with the model in evaluation mode (batch norm uses its running statistics, so crafting does not
update them) and through the model's input transform (BPDA where it is not differentiable).
Its randomness (PGD's random start) is seeded per epoch from ``trainer.seed`` and the epoch, so a
run resumed at an epoch boundary crafts the same examples as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from robustctl.config.validation import require
from robustctl.train_defenses.registry import OPTIONS


@dataclass
class AdversarialTrainingConfig:
    """``train_defense=fgsm_at | pgd_at``: the ``attack`` option and ``attack_params`` that craft
    x', and ``mix``, the fraction of each batch replaced by x' (module docstring)."""

    name: str = "pgd_at"
    attack: str = "pgd"
    attack_params: dict[str, Any] = field(default_factory=lambda: {"eps": 0.1, "steps": 7})
    mix: float = 1.0

    def __post_init__(self) -> None:
        # imported here: robustctl.attacks imports robustctl.defenses, which imports the models
        from robustctl.attacks import check_attack_choice

        check_attack_choice(self.attack, self.attack_params, "train_defense.attack")
        require(0.0 < self.mix <= 1.0, "train_defense.mix", f"must be in (0, 1], got {self.mix}")


def epoch_seed(seed: int, epoch: int) -> int:
    """The attack's seed in ``epoch`` of a run seeded ``seed``: distinct per (seed, epoch) pair
    for epochs below 1,000,003, and a function of them alone (resumable)."""
    return int(seed) * 1_000_003 + int(epoch)


class AdversarialTraining:
    """Replaces part of each batch by adversarial examples (module docstring). Call
    :meth:`for_epoch` once per epoch, then the returned function on each batch."""

    def __init__(self, config: AdversarialTrainingConfig, teacher: nn.Module | None = None) -> None:
        self.config = config

    def wrap_loss(self, loss: Any) -> Any:
        """The run's loss, unchanged (adversarial training changes the batches only)."""
        return loss

    def for_epoch(self, model: nn.Module, *, seed: int, epoch: int) -> BatchAdversary:
        from robustctl.attacks import build

        params = {**dict(self.config.attack_params), "seed": epoch_seed(seed, epoch)}
        return BatchAdversary(build(self.config.attack, model, **params), self.config.mix)


class BatchAdversary:
    """One epoch's crafting: ``adversary(x, y)`` returns the batch with its first round(mix n)
    images replaced by the attack's adversarial examples (detached, on x's device)."""

    def __init__(self, attack: Any, mix: float) -> None:
        self.attack, self.mix = attack, mix

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        k = round(self.mix * len(y))
        if k == 0:
            return x
        x_adv = self.attack(x[:k], y[:k]).x_adv.to(x.dtype)
        return x_adv if k == len(y) else torch.cat([x_adv, x[k:]])


# Goodfellow et al. 2015: FGSM examples for half of each batch
OPTIONS.add(
    AdversarialTrainingConfig(name="fgsm_at", attack="fgsm", attack_params={"eps": 0.1}, mix=0.5),
    AdversarialTraining,
)
# Madry et al. 2018: every example replaced by its PGD (random start) example
OPTIONS.add(AdversarialTrainingConfig(), AdversarialTraining)
