"""PGD: projected gradient descent with random start and restarts (Madry et al. 2018, "Towards deep
learning models resistant to adversarial attacks", arXiv:1706.06083). Distance: Linf or L2.

Update, for k = 0 .. steps-1, with g = grad_x of CE(f(x_k), y) (untargeted) or -CE(f(x_k), t)::

    Linf:  x_{k+1} = P(x_k + alpha * sign(g))
    L2:    x_{k+1} = P(x_k + alpha * g / (||g||_2 + 1e-10))

P projects onto the eps-ball around x intersected with the box [0, 1] (Linf: element-wise clip;
L2: delta * min(1, eps / ||delta||_2), then clip). Random start: x_0 = clip(x + U(-eps, eps)^n)
for Linf, x_0 = clip(x + eps * u^(1/n) * z / ||z||) with z ~ N(0, I), u ~ U(0, 1) for L2 (uniform
in the ball); without it x_0 = x. With ``restarts`` > 1 the examples not yet successful are
attacked again from a fresh random start; each keeps its first successful run (else the last).

Arguments:
    model (nn.Module): images [N, C, H, W] in [0, 1] -> logits [N, K].
    eps (float): budget in pixel units. Default 0.05.
    alpha (float | None): step size; None = 2.5 * eps / steps (Madry et al.'s rule).
    steps (int): iterations per run. Default 10.
    norm (str): "linf" | "l2". Default "linf".
    random_start (bool): start from a random point of the ball. Default True.
    restarts (int): runs from independent random starts. Default 1.
    targeted, seed: see :class:`~robustctl.attacks.base.Attack`.

Example::

    >>> x_adv, success, *_ = PGD(model, eps=0.03, steps=20, restarts=3)(x, y)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from robustctl.attacks.base import BoundedAttack, BoundedAttackConfig, flat_norm
from robustctl.config.validation import require


@dataclass
class PgdConfig(BoundedAttackConfig):
    """PGD: ``steps`` projected steps of size ``alpha`` (null = 2.5 eps / steps), random start,
    restarts."""

    name: str = "pgd"
    steps: int = 10
    alpha: float | None = None
    random_start: bool = True
    restarts: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        self.positive("steps", "restarts")
        require(
            self.alpha is None or self.alpha > 0,
            "attack.alpha",
            f"must be > 0 or null, got {self.alpha}",
        )


class PGD(BoundedAttack):
    method = "pgd"
    config_type = PgdConfig
    alpha_rule: float = 2.5  # alpha = alpha_rule * eps / steps when alpha is None

    def __init__(self, model: nn.Module, config: PgdConfig | None = None, /, **params: Any) -> None:
        super().__init__(model, config, **params)
        # optional diagnostic hook: called as step_callback(k, x_k) after each step k = 1..steps
        self.step_callback: Callable[[int, Tensor], None] | None = None

    @property
    def step_size(self) -> float:
        """alpha, or the rule's alpha_rule * eps / steps when it is null."""
        return self.alpha if self.alpha is not None else self.alpha_rule * self.eps / self.steps

    def random_init(self, x: Tensor) -> Tensor:
        g = self.generator(x.device)
        if self.norm == "linf":
            noise = torch.rand(x.shape, device=x.device, generator=g) * (2 * self.eps) - self.eps
            return (x + noise).clamp(0.0, 1.0)
        z = torch.randn(x.shape, device=x.device, generator=g)
        u = torch.rand(len(x), device=x.device, generator=g) ** (1.0 / x[0].numel())
        radius = (self.eps * u / flat_norm(z).clamp_min(1e-12)).view(-1, *([1] * (x.dim() - 1)))
        return (x + radius * z).clamp(0.0, 1.0)

    def run_once(self, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        x_adv = self.random_init(x) if self.random_start else x.clone()
        alpha = self.step_size
        lo, hi = (
            (x - self.eps).clamp(min=0.0),
            (x + self.eps).clamp(max=1.0),
        )  # Linf ball ∩ box, per value
        for k in range(self.steps):
            g = self.ascent_grad(x_adv, y, target)
            if self.norm == "linf":
                x_adv = torch.min(torch.max(x_adv + alpha * g.sign(), lo), hi)
            else:
                step = alpha * g / (flat_norm(g) + 1e-10).view(-1, *([1] * (x.dim() - 1)))
                x_adv = self.project(x_adv + step, x)
            if self.step_callback is not None:
                self.step_callback(k + 1, x_adv)
        return x_adv

    def perturb(self, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        x_adv = self.run_once(x, y, target)
        if self.restarts == 1:
            return x_adv
        with torch.no_grad():
            done = self.is_success(self.logits(x_adv).argmax(1), y, target)
        for _ in range(self.restarts - 1):
            todo = (~done).nonzero().squeeze(1)
            if todo.numel() == 0:
                break
            t = None if target is None else target[todo]
            x_new = self.run_once(x[todo], y[todo], t)
            with torch.no_grad():
                done[todo] = self.is_success(self.logits(x_new).argmax(1), y[todo], t)
            x_adv[todo] = x_new
        return x_adv
