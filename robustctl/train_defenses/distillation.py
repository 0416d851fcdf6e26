"""Defensive distillation (Papernot, McDaniel, Wu, Jha and Swami 2016, "Distillation as a defense
to adversarial perturbations against deep neural networks"), in two options:

- ``distill_teacher``: the teacher F, trained with its softmax at temperature T: the run's loss
  is computed on the logits divided by T and multiplied by T, T L(Z / T, y) (any loss:
  cross-entropy gives T CE(softmax(Z / T), y)). At test time the model predicts from Z itself
  (T = 1), so its softmax saturates: gradients of the cross-entropy vanish, which is what made
  the defense look robust.
- ``distillation``: the student F_d, the same architecture trained at the same T on the teacher's
  soft labels, p = softmax(Z_F(x) / T) with Z_F the teacher's prediction logits on the same
  (augmented) batch:

      L_d = - T mean_i  sum_k  p_ik  log softmax(Z_d(x_i) / T)_k

  and tested at T = 1 too.

The factor T makes the gradient with respect to the logits, softmax(Z / T) - y (or - p), as large
as in ordinary training, so one learning rate serves every T (a constant factor is a learning-rate
choice; Hinton et al. 2015 scale their soft term by T^2 for the same reason). Without it the
logits must grow T-fold under gradients T times smaller, against the weight decay: at T = 100 a
CE ResNet-20 teacher reached 83% on digits in 20 epochs instead of 98.6%.

The student's run trains (or reuses) its teacher as its own run first (:func:`teacher_config`:
the same config with ``train_defense=distill_teacher`` at this T) and names it in its tags
(``teacher_run_id``, ``teacher_checkpoint``).

Carlini and Wagner (2016, "Defensive distillation is not robust to adversarial examples") showed
that the teacher trained at T is as "robust" as the student: the effect is the logits' scale,
not the distillation; ``experiments/taxonomy_distillation_*.yaml`` tests that claim. The
student's objective replaces the classification target, so it composes with losses that classify
single images (``ce``, ``rce``: the teacher's soft labels come from its prediction logits) but not
with Siamese partners or class centers, which need hard labels (refused at composition:
:func:`robustctl.train_defenses.check_with_loss`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustctl.config.validation import require
from robustctl.losses.base import LossOutput, TrainingLoss
from robustctl.models import ModelOutput
from robustctl.train_defenses.registry import OPTIONS

# Papernot et al.'s temperature for MNIST and CIFAR-10
PAPER_TEMPERATURE = 100.0


def _check_temperature(t: float) -> None:
    require(math.isfinite(t) and t > 0, "train_defense.temperature", f"must be > 0, got {t}")


@dataclass
class TemperatureConfig:
    """``train_defense=distill_teacher``: train with the softmax at ``temperature`` T."""

    name: str = "distill_teacher"
    temperature: float = PAPER_TEMPERATURE

    def __post_init__(self) -> None:
        _check_temperature(self.temperature)


@dataclass
class DistillationConfig:
    """``train_defense=distillation``: train at ``temperature`` T on the soft labels of the
    teacher trained at the same T."""

    name: str = "distillation"
    temperature: float = PAPER_TEMPERATURE

    def __post_init__(self) -> None:
        _check_temperature(self.temperature)


def teacher_config(cfg: DistillationConfig) -> TemperatureConfig:
    """The ``train_defense`` of a student's teacher."""
    return TemperatureConfig(temperature=cfg.temperature)


class TemperatureLoss(TrainingLoss):
    """The wrapped loss on the logits divided by T, times T: ``T base(Z / T, y)`` (the embedding
    as is; module docstring: why the factor T)."""

    def __init__(self, base: TrainingLoss, temperature: float) -> None:
        super().__init__()
        self.base, self.temperature = base, float(temperature)
        self.logit_sign = base.logit_sign
        self.needs_pairs = base.needs_pairs
        self.same_class_probability = base.same_class_probability

    def scaled(self, output: ModelOutput) -> ModelOutput:
        return ModelOutput(output.logits / self.temperature, output.embedding)

    def forward(self, output: ModelOutput, labels: Tensor, pairs: Any = None) -> LossOutput:
        total, terms = self.base(
            self.scaled(output),
            labels,
            None if pairs is None else pairs._replace(output=self.scaled(pairs.output)),
        )
        t = self.temperature
        return LossOutput(t * total, {name: t * value for name, value in terms.items()})


class DistillationLoss(TrainingLoss):
    """L_d (module docstring) against the soft labels :class:`SoftLabels` set for the current
    batch; its prediction logits are ``logit_sign * Z`` like the base loss's."""

    term = "distill"

    def __init__(self, base: TrainingLoss, temperature: float) -> None:
        super().__init__()
        self.temperature = float(temperature)
        self.logit_sign = base.logit_sign
        self.soft_labels: Tensor | None = None

    def forward(self, output: ModelOutput, labels: Tensor, pairs: Any = None) -> LossOutput:
        if self.soft_labels is None or len(self.soft_labels) != len(labels):
            raise RuntimeError("distillation: no soft labels for this batch (SoftLabels not run)")
        log_p = F.log_softmax(self.logit_sign * output.logits.float() / self.temperature, dim=1)
        value = -self.temperature * (self.soft_labels * log_p).sum(1).mean()
        return LossOutput(value, {self.term: value.detach()})


class SoftLabels:
    """One epoch's batch hook for the student: leaves the batch as is and sets the loss's soft
    labels, softmax(teacher prediction logits / T), on it (teacher in eval mode, no grad)."""

    def __init__(self, teacher: nn.Module, loss: DistillationLoss) -> None:
        self.teacher, self.loss = teacher, loss

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        from robustctl.inference import prediction_logits

        with torch.no_grad():
            logits = prediction_logits(self.teacher, x).float()
        self.loss.soft_labels = F.softmax(logits / self.loss.temperature, dim=1)
        return x


class TemperatureTraining:
    """``distill_teacher``: wraps the run's loss in :class:`TemperatureLoss`; batches unchanged."""

    def __init__(self, config: TemperatureConfig, teacher: nn.Module | None = None) -> None:
        self.config = config

    def wrap_loss(self, loss: TrainingLoss) -> TrainingLoss:
        return TemperatureLoss(loss, self.config.temperature)

    def for_epoch(self, model: nn.Module, *, seed: int, epoch: int) -> None:
        return None


class Distillation:
    """``distillation``: the student's loss (:class:`DistillationLoss`) and the batch hook that
    gives it the ``teacher``'s soft labels."""

    needs_teacher = True

    def __init__(self, config: DistillationConfig, teacher: nn.Module | None = None) -> None:
        if teacher is None:
            raise ValueError("distillation needs its teacher model (train_defense=distill_teacher)")
        self.config, self.teacher = config, teacher.eval()
        self.loss: DistillationLoss | None = None

    def wrap_loss(self, loss: TrainingLoss) -> TrainingLoss:
        self.loss = DistillationLoss(loss, self.config.temperature)
        return self.loss

    def for_epoch(self, model: nn.Module, *, seed: int, epoch: int) -> SoftLabels:
        assert self.loss is not None, "wrap_loss first"
        return SoftLabels(self.teacher, self.loss)


# Papernot et al. 2016: teacher trained at temperature T, student on its soft labels
OPTIONS.add(TemperatureConfig(), TemperatureTraining)
OPTIONS.add(DistillationConfig(), Distillation)
