"""DeepFool (Moosavi-Dezfooli et al. 2016, "DeepFool: a simple and accurate method to fool deep
neural networks", arXiv:1511.04599). Distance: L2. Untargeted, unbounded (minimal-distortion).

Linearize the classifier around the current iterate x_i and step to the nearest linearized
decision boundary. With f the prediction-view logits, y the label and the candidate classes k
(the ``candidates`` largest logits of x_i, all classes by default)::

    w_k = grad f_k(x_i) - grad f_y(x_i),      f'_k = f_k(x_i) - f_y(x_i)
    l   = argmin_{k != y} |f'_k| / ||w_k||_2
    r_i = (|f'_l| + 1e-4) / ||w_l||_2^2 * w_l
    x_{i+1} = clip_[0,1](x + (1 + overshoot) * sum_{j <= i} r_j)

until the prediction leaves y or ``steps`` iterations. Examples already fooled drop out of the
batch (gathered by index, no per-example loop); each iteration costs ``candidates`` backward passes
for the still-active examples.

Arguments:
    model (nn.Module): images [N, C, H, W] in [0, 1] -> logits [N, K].
    steps (int): maximum iterations. Default 50.
    overshoot (float): relative overshoot of the accumulated step. Default 0.02.
    candidates (int | None): number of top classes to consider; None = all.

Example::

    >>> x_adv, success, *_ = DeepFool(model)(x, y)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from robustctl.attacks.base import Attack, AttackConfig
from robustctl.config.validation import require


@dataclass
class DeepFoolConfig(AttackConfig):
    """DeepFool: steps to the nearest linearized boundary; untargeted only."""

    target_modes: ClassVar[tuple[str, ...]] = ("none",)
    name: str = "deepfool"
    steps: int = 50
    overshoot: float = 0.02
    candidates: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self.positive("steps")
        require(self.overshoot >= 0, "attack.overshoot", f"must be >= 0, got {self.overshoot}")
        require(
            self.candidates is None or self.candidates >= 2,
            "attack.candidates",
            f"must be >= 2 or null, got {self.candidates}",
        )


class DeepFool(Attack):
    method = "deepfool"
    config_type = DeepFoolConfig

    def perturb(self, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        r_tot = torch.zeros_like(x)
        x_adv = x.clone()
        active = torch.arange(len(x), device=x.device)
        for _ in range(self.steps):
            xa = x_adv[active].requires_grad_(True)
            logits = self.logits(xa)
            still = logits.argmax(1) == y[active]
            if not still.any():
                break
            k = (
                logits.shape[1]
                if self.candidates is None
                else min(self.candidates, logits.shape[1])
            )
            ya = y[active][:, None]
            others = (
                logits.detach()
                .scatter(1, ya, float("-inf"))
                .argsort(1, descending=True)[:, : k - 1]
            )
            classes = torch.cat([ya, others], 1)  # column 0 is the label
            grads = []
            for j in range(k):
                retain = j < k - 1
                (g,) = torch.autograd.grad(
                    logits.gather(1, classes[:, j : j + 1]).sum(), xa, retain_graph=retain
                )
                grads.append(g[still])
            active, classes = active[still], classes[still]
            f = logits.detach()[still].gather(1, classes)  # [M, k]
            jac = torch.stack(grads, 1)  # [M, k, C, H, W]
            w = (jac[:, 1:] - jac[:, :1]).flatten(2)  # [M, k-1, n]
            fk = (f[:, 1:] - f[:, :1]).abs()  # [M, k-1]
            wnorm = w.norm(dim=2)
            best = (fk / (wnorm + 1e-8)).argmin(1)
            w_l = w[torch.arange(len(best), device=x.device), best]
            scale = (fk.gather(1, best[:, None]).squeeze(1) + 1e-4) / (
                wnorm.gather(1, best[:, None]).squeeze(1) ** 2 + 1e-12
            )
            r_tot[active] += (scale[:, None] * w_l).view(-1, *x.shape[1:])
            x_adv[active] = (x[active] + (1 + self.overshoot) * r_tot[active]).clamp(0.0, 1.0)
        return x_adv
