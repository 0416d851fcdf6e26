"""TRADES (Zhang, Yu, Jiao, Xing, El Ghaoui and Jordan 2019, "Theoretically principled trade-off
between robustness and accuracy"): the training objective adds to the loss on the clean image a
term that pulls the prediction on a nearby adversarial image toward the clean prediction,

    min_theta  E_(x, y) [ L(f(x), y) + beta KL( p(x) || p(x') ) ],
    x' = argmax_{||x' - x||_inf <= eps}  KL( p(x) || p(x') ),

with p = softmax of the prediction logits (``logit_sign * Z``), KL(p || q) = sum_k p_k log(p_k /
q_k) averaged over the batch, and L the run's own loss (cross-entropy gives the paper's objective;
any loss composes, Siamese partners stay clean). beta = 1 / lambda trades clean accuracy for
robustness: the authors use 6 on CIFAR-10 and 1 on MNIST.

x' is found as the authors do: start at x + 0.001 N(0, I), then ``steps`` signed-gradient ascent
steps of ``step_size`` on KL(p(x) || p(x')) (p(x) fixed), each projected onto the eps-ball and the
[0, 1] box, with the model in evaluation mode (batch norm uses its running statistics). Both terms
of the objective are then computed in training mode, x and x' in separate forward passes (batch
norm normalizes each with its own batch statistics, as the authors' code does). The start's noise
is drawn from a generator seeded per epoch from ``trainer.seed`` (resumable, like PGD training).

Budgets (authors'): CIFAR-10 eps 0.031, 10 steps of 0.007, beta 6
(``train_defense=trades-cifar10``); MNIST eps 0.3, 40 steps of 0.01, beta 1
(``train_defense=trades-mnist``). The default is the digits scale of ``pgd_at``: eps 0.1, 10
steps of 0.025, beta 6. Departure: the l-inf threat model only (the authors' l2 variant is left
out).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustctl.config.validation import require
from robustctl.inference import eval_mode, prediction_logits
from robustctl.losses.base import LossOutput, TrainingLoss
from robustctl.models import ModelOutput
from robustctl.train_defenses.adversarial import epoch_seed
from robustctl.train_defenses.registry import OPTIONS

START_NOISE = 0.001  # the authors' start: x + 0.001 N(0, I)


@dataclass
class TradesConfig:
    """``train_defense=trades``: ``beta`` weighs the KL term; ``eps``, ``steps`` and
    ``step_size`` craft x' (module docstring)."""

    name: str = "trades"
    beta: float = 6.0
    eps: float = 0.1
    steps: int = 10
    step_size: float = 0.025

    def __post_init__(self) -> None:
        for key in ("beta", "eps", "step_size"):
            value = getattr(self, key)
            require(
                math.isfinite(value) and value > 0,
                f"train_defense.{key}",
                f"must be > 0, got {value}",
            )
        require(self.steps >= 1, "train_defense.steps", f"must be >= 1, got {self.steps}")


def kl_divergence(p_logits: Tensor, q_logits: Tensor) -> Tensor:
    """KL(p || q) per example, sum_k p_k (log p_k - log q_k), for p = softmax(``p_logits``) and
    q = softmax(``q_logits``) (log-softmax on both sides: finite for saturated logits)."""
    log_p = F.log_softmax(p_logits, dim=1)
    return (log_p.exp() * (log_p - F.log_softmax(q_logits, dim=1))).sum(1)


def trades_examples(
    model: nn.Module,
    x: Tensor,
    *,
    eps: float,
    steps: int,
    step_size: float,
    generator: torch.Generator | None = None,
) -> Tensor:
    """x' = argmax KL(p(x) || p(x')) over the eps-ball and the box by signed-gradient ascent from
    x + 0.001 N(0, I) (module docstring), the model in evaluation mode; detached."""
    with eval_mode(model):
        with torch.no_grad():
            clean = prediction_logits(model, x).float()
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x_adv = (x + START_NOISE * noise).detach()
        for _ in range(steps):
            x_adv.requires_grad_(True)
            kl = kl_divergence(clean, prediction_logits(model, x_adv).float()).sum()
            (grad,) = torch.autograd.grad(kl, x_adv)
            x_adv = x_adv.detach() + step_size * grad.sign()
            x_adv = torch.minimum(torch.maximum(x_adv, x - eps), x + eps).clamp(0.0, 1.0)
    return x_adv.detach()


class TradesLoss(TrainingLoss):
    """The run's loss plus ``beta`` KL(p(x) || p(x')), with the prediction logits on x' set for
    the current batch by :class:`TradesBatch` (module docstring). Terms: the base loss's, and
    ``trades_kl`` (the batch mean of the KL, before beta)."""

    term = "trades_kl"

    def __init__(self, base: TrainingLoss, beta: float) -> None:
        super().__init__()
        self.base, self.beta = base, float(beta)
        self.logit_sign = base.logit_sign
        self.needs_pairs = base.needs_pairs
        self.same_class_probability = base.same_class_probability
        self.adversarial_logits: Tensor | None = None  # prediction logits on x', with their graph

    def forward(self, output: ModelOutput, labels: Tensor, pairs: Any = None) -> LossOutput:
        adv = self.adversarial_logits
        if adv is None or len(adv) != len(labels):
            raise RuntimeError(
                "trades: no adversarial outputs for this batch (TradesBatch not run)"
            )
        self.adversarial_logits = None  # one batch's, used once
        total, terms = self.base(output, labels, pairs)
        kl = kl_divergence(self.logit_sign * output.logits.float(), adv).mean()
        return LossOutput(total + self.beta * kl, {**terms, self.term: kl.detach()})


class TradesBatch:
    """One epoch's batch hook: crafts x' for the batch (evaluation mode), forwards it in training
    mode with its graph, sets the prediction logits on the loss, and returns the batch as is."""

    def __init__(self, model: nn.Module, loss: TradesLoss, config: TradesConfig, seed: int) -> None:
        self.model, self.loss, self.config = model, loss, config
        self.seed = seed
        self.generator: torch.Generator | None = None

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        if self.generator is None or self.generator.device != x.device:
            self.generator = torch.Generator(device=x.device).manual_seed(self.seed)
        cfg = self.config
        x_adv = trades_examples(
            self.model,
            x,
            eps=cfg.eps,
            steps=cfg.steps,
            step_size=cfg.step_size,
            generator=self.generator,
        )
        self.loss.adversarial_logits = prediction_logits(self.model, x_adv).float()
        return x


class Trades:
    """``trades``: wraps the run's loss in :class:`TradesLoss`; each epoch's hook is a
    :class:`TradesBatch`."""

    def __init__(self, config: TradesConfig, teacher: nn.Module | None = None) -> None:
        self.config = config
        self.loss: TradesLoss | None = None

    def wrap_loss(self, loss: TrainingLoss) -> TrainingLoss:
        self.loss = TradesLoss(loss, self.config.beta)
        return self.loss

    def for_epoch(self, model: nn.Module, *, seed: int, epoch: int) -> TradesBatch:
        assert self.loss is not None, "wrap_loss first"
        return TradesBatch(model, self.loss, self.config, epoch_seed(seed, epoch))


# Zhang et al. 2019 at the digits scale of pgd_at (presets: conf/train_defense/trades-*.yaml)
OPTIONS.add(TradesConfig(), Trades)
