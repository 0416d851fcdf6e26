"""JSMA: the Jacobian-based saliency map attack (Papernot et al. 2016, "The limitations of deep
learning in adversarial settings", arXiv:1511.07528). Distance: L0. Targeted by construction; the
PDM protocol draws the target uniformly from the classes != y (``targeted="random"``, default).

Each iteration modifies a pair of input values (features) p, q of the search domain Gamma (the
features not yet at the bound theta pushes toward). With Z the prediction-view logits (JSMA-Z,
as in cleverhans) and t the target::

    alpha_i = d Z_t / d x_i,            beta_i = sum_{j != t} d Z_j / d x_i
    (p, q)  = argmax_{p < q in Gamma} -(alpha_p + alpha_q) * (beta_p + beta_q)
              subject to  s (alpha_p + alpha_q) > 0  and  s (beta_p + beta_q) < 0,   s = sign(theta)
    x_p, x_q <- clip_[0,1](x_p + theta), clip_[0,1](x_q + theta)

and features that reach 0 or 1 leave Gamma. An example stops when it is classified as t, when no
pair satisfies the conditions, or after min(steps, floor(gamma * n / 2)) iterations (n = C*H*W:
at most a fraction gamma of the features changes). Two backward passes per iteration give alpha
and beta for the whole batch. The pair search is O(n^2) per example; it runs over blocks of rows
of the pair matrix so that one block holds at most ``max_pair_chunk`` scores (bounded memory on
3x32x32 inputs: n^2 = 9.4M pairs per image), and the result does not depend on the block size.

Paper parameters (PDM Table 5): max 100 iterations; theta 1, gamma 0.1 (cleverhans defaults).

Arguments:
    model (nn.Module): images [N, C, H, W] in [0, 1] -> logits [N, K].
    steps (int): maximum iterations (pairs changed). Default 100.
    gamma (float): maximum fraction of features changed, in (0, 1]. Default 0.1.
    theta (float): change applied to a chosen feature, in [-1, 1] \\ {0}. Default 1.
    max_pair_chunk (int): most pair scores held at once (memory knob; the search needs about
        20 bytes per score, so the default 2**22 peaks near 80 MB). Default 2**22.
    targeted (str): "random" | "least_likely" (or pass ``target=``); seed: see the base class.

Example::

    >>> x_adv, success, _, target = JSMA(model)(x, y)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from robustctl.attacks.base import Attack, AttackConfig
from robustctl.attacks.progress import LoopProgress
from robustctl.config.validation import require


@dataclass
class JsmaConfig(AttackConfig):
    """JSMA: saliency-map pixel pairs toward a target != y (random by default)."""

    target_modes: ClassVar[tuple[str, ...]] = ("random", "least_likely")
    name: str = "jsma"
    targeted: str = "random"
    steps: int = 100
    gamma: float = 0.1
    theta: float = 1.0
    max_pair_chunk: int = 2**22

    def __post_init__(self) -> None:
        super().__post_init__()
        self.positive("steps", "max_pair_chunk")
        require(0 < self.gamma <= 1, "attack.gamma", f"must be in (0, 1], got {self.gamma}")
        require(
            -1 <= self.theta <= 1 and self.theta != 0,
            "attack.theta",
            f"must be in [-1, 1] and != 0, got {self.theta}",
        )


class JSMA(Attack):
    method = "jsma"
    config_type = JsmaConfig
    loop_progress: ClassVar[bool] = True  # show the iteration (robustctl.attacks.progress)

    def saliency_pairs(
        self, alpha: Tensor, beta: Tensor, domain: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Best pair (p, q), p < q, per example: ([M] p, [M] q, [M] found) from alpha,
        beta [M, n]."""
        m, n = alpha.shape
        sign = 1.0 if self.theta > 0 else -1.0
        alpha, beta = sign * alpha, sign * beta
        best = torch.full((m,), float("-inf"), device=alpha.device)
        best_p = torch.zeros(m, dtype=torch.long, device=alpha.device)
        best_q = torch.zeros_like(best_p)
        cols = torch.arange(n, device=alpha.device)
        r0 = 0
        while r0 < n - 1:
            width = n - r0  # only q >= r0 pairs with p >= r0
            r1 = min(r0 + max(1, self.max_pair_chunk // max(m * width, 1)), n - 1)
            a = alpha[:, r0:r1, None] + alpha[:, None, r0:]  # [M, r1 - r0, width]
            b = beta[:, r0:r1, None] + beta[:, None, r0:]
            ok = (a > 0) & (b < 0) & domain[:, r0:r1, None] & domain[:, None, r0:]
            ok &= cols[r0:r1, None] < cols[None, r0:]  # p < q
            value, flat = torch.where(ok, -a * b, float("-inf")).flatten(1).max(1)
            better = value > best
            best = torch.where(better, value, best)
            best_p = torch.where(better, r0 + flat // width, best_p)
            best_q = torch.where(better, r0 + flat % width, best_q)
            r0 = r1
        return best_p, best_q, best > float("-inf")

    def perturb(self, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        assert target is not None
        shape, n = x.shape[1:], x[0].numel()
        xf = x.flatten(1).clone()
        domain = xf < 1 if self.theta > 0 else xf > 0
        active = torch.arange(len(x), device=x.device)
        iterations = min(self.steps, math.floor(self.gamma * n / 2))
        with LoopProgress(f"  {self.name} batch", iterations, self.loop_progress) as bar:
            for i in range(iterations):
                xa = xf[active].view(-1, *shape).requires_grad_(True)
                logits = self.logits(xa)
                t = target[active]
                (alpha,) = torch.autograd.grad(
                    logits.gather(1, t[:, None]).sum(), xa, retain_graph=True
                )
                (total,) = torch.autograd.grad(logits.sum(), xa)
                alpha, beta = alpha.flatten(1), (total - alpha.view_as(total)).flatten(1)
                keep = logits.detach().argmax(1) != t  # not yet at the target
                if not keep.any():
                    break
                active = active[keep]
                p, q, found = self.saliency_pairs(alpha[keep], beta[keep], domain[active])
                active = active[found]
                if active.numel() == 0:
                    break
                p, q = p[found], q[found]
                for idx in (p, q):
                    value = (xf[active, idx] + self.theta).clamp(0.0, 1.0)
                    xf[active, idx] = value
                    domain[active, idx] = (value < 1) if self.theta > 0 else (value > 0)
                bar.update(i + 1, ("iter", i + 1, iterations))
        return xf.view(-1, *shape)
