"""FMN: the fast minimum-norm attack (Pintor, Roli, Brendel and Biggio 2021, "Fast minimum-norm
adversarial attacks through adaptive norm constraints", NeurIPS, arXiv:2102.12827), in the L2 and
Linf norms. Untargeted or targeted, unbounded: it returns, per example, the *smallest*
perturbation it found that fools the model (``last_norms``), the quantity a distortion
measurement needs, rather than a success at a fixed budget.

Per example, from delta_0 = 0 and eps_0 = 0, for k = 0 .. K-1 with cosine schedules
a_k = a_K + (a_0 - a_K)(1 + cos(pi k / K)) / 2 (step) and g_k likewise (norm change)::

    m_k    = z_y - max_{j != y} z_j  at x + delta   (targeted: max_{j != t} z_j - z_t)
    adv_k  = the prediction at x + delta is not y   (targeted: is t)
    eps_k  = min(eps_{k-1} (1 - g_k), best_k)       if adv_k          (shrink, never above the
                                                                        best norm found)
           = eps_{k-1} (1 + g_k)                    elif one was found before (grow back)
           = max(||delta||_p + |m_k| / ||grad m_k||_q,   else (first-order distance to the
                 eps_{k-1} (1 + g_k))                   boundary, q the dual norm: 2 for L2, 1
                                                        for Linf; and at least the growth above)
    eps_k  = min(eps_k, ||max(x, 1 - x)||_p)        (no farther than the farthest box corner)
    delta <- delta - a_k grad m_k / ||grad m_k||_2  (an L2-normalized descent step of the margin)
    delta <- the projection onto the eps_k-ball of the norm, then x + delta clipped to [0, 1]

and each example keeps its smallest-norm adversarial iterate (else the clean image; ``last_norms``
inf). The margin is on the prediction view (RCE and PDM: negated logits). Defaults: the authors'
(a_0 = 1, a_K = a_0 / 100, g_0 = 0.05, g_K = 0.001) with 1,000 steps; each step is one forward and
one backward pass of the examples.

Departure (as in FMN-wb, :mod:`robustctl.threat_models.fmn_wb`): before the first success eps
grows by at least (1 + g_k) per step. With the first-order estimate alone (the authors' rule) the
projection puts an example exactly on the linearized boundary, where the margin is 0 up to float
round-off, and it can stay there: on an affine model (tests/attacks/test_linear_minimum.py) one
example of ten was never fooled in 300 steps.

Arguments:
    model (nn.Module): images [N, C, H, W] in [0, 1] -> logits [N, K].
    norm (str): "l2" | "linf". Default "l2".
    steps (int): iterations. Default 1000.
    alpha_init, alpha_final (float): the step's cosine schedule. Defaults 1.0, 0.01.
    gamma_init, gamma_final (float): the norm change's cosine schedule. Defaults 0.05, 0.001.
    targeted, seed: see :class:`~robustctl.attacks.base.Attack`.

Example::

    >>> attack = FMN(model, norm="l2", steps=500)
    >>> x_adv, success, *_ = attack(x, y)
    >>> attack.last_norms  # the smallest L2 norm found per example (inf: none)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from robustctl.attacks.base import Attack, AttackConfig
from robustctl.config.validation import require

NORMS = {"l2": (2.0, 2.0), "linf": (float("inf"), 1.0)}  # norm -> (p, dual q)


def cosine(start: float, end: float, k: int, total: int) -> float:
    """end + (start - end) * (1 + cos(pi k / total)) / 2: ``start`` at k = 0, ``end`` at total."""
    return end + (start - end) * (1 + math.cos(math.pi * k / total)) / 2


@dataclass
class FmnConfig(AttackConfig):
    """FMN: ``steps`` iterations in the ``norm``, step ``alpha_init`` -> ``alpha_final`` and norm
    change ``gamma_init`` -> ``gamma_final`` on cosine schedules."""

    name: str = "fmn"
    norm: str = "l2"
    steps: int = 1000
    alpha_init: float = 1.0
    alpha_final: float = 0.01
    gamma_init: float = 0.05
    gamma_final: float = 0.001

    def __post_init__(self) -> None:
        super().__post_init__()
        self.positive("steps", "alpha_init", "alpha_final", "gamma_init", "gamma_final")
        require(
            self.norm in NORMS,
            "attack.norm",
            f"must be one of {', '.join(NORMS)}; got {self.norm!r}",
        )


class FMN(Attack):
    """FMN (module docstring); after a call, :attr:`last_norms` [N] holds each example's smallest
    adversarial norm found (inf where none)."""

    method = "fmn"
    config_type = FmnConfig

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.last_norms = torch.zeros(0)

    def margin(self, logits: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        """[N] the margin FMN descends: negative exactly when the example is adversarial."""
        if target is None:
            other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
            return logits.gather(1, y[:, None]).squeeze(1) - other
        other = logits.scatter(1, target[:, None], float("-inf")).amax(1)
        return other - logits.gather(1, target[:, None]).squeeze(1)

    def perturb(self, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        p, q = NORMS[self.norm]
        n, view = len(x), (-1, *([1] * (x.dim() - 1)))

        def norm_of(t: Tensor, order: float) -> Tensor:
            return t.flatten(1).norm(p=order, dim=1)

        worst = norm_of(torch.maximum(x, 1 - x), p)
        eps = torch.zeros(n, device=x.device)
        best = torch.full((n,), float("inf"), device=x.device)
        best_adv = x.clone()
        found = torch.zeros(n, dtype=torch.bool, device=x.device)
        delta = torch.zeros_like(x)
        for k in range(self.steps):
            alpha = cosine(self.alpha_init, self.alpha_final, k, self.steps)
            gamma = cosine(self.gamma_init, self.gamma_final, k, self.steps)
            delta.requires_grad_(True)
            x_adv = x + delta
            logits = self.logits(x_adv)
            margin = self.margin(logits, y, target)
            (grad,) = torch.autograd.grad(margin.sum(), delta)
            self.passes += n
            with torch.no_grad():
                delta = delta.detach()
                size = norm_of(delta, p)
                adv = self.is_success(logits.argmax(1), y, target)
                smaller = adv & (size < best)
                best = torch.where(smaller, size, best)
                best_adv = torch.where(smaller.view(view), x_adv.detach(), best_adv)
                to_boundary = size + margin.abs() / norm_of(grad, q).clamp(min=1e-12)
                grown = eps * (1 + gamma)
                eps = torch.where(
                    adv,
                    torch.minimum(eps * (1 - gamma), best),
                    torch.where(found, grown, torch.maximum(to_boundary, grown)),
                )
                found |= adv
                eps = torch.minimum(eps, worst)
                step = grad / norm_of(grad, 2.0).clamp(min=1e-12).view(view)
                delta = self.project_ball(delta - alpha * step, eps)
                delta = (x + delta).clamp(0.0, 1.0) - x
        self.last_norms = best.detach().cpu()
        return best_adv

    def project_ball(self, delta: Tensor, eps: Tensor) -> Tensor:
        """``delta`` projected onto the ball of radius ``eps`` [N] in the norm."""
        view = (-1, *([1] * (delta.dim() - 1)))
        if self.norm == "linf":
            bound = eps.view(view)
            return torch.maximum(torch.minimum(delta, bound), -bound)
        size = delta.flatten(1).norm(dim=1)
        scale = (eps / size.clamp(min=1e-12)).clamp(max=1.0)
        return delta * scale.view(view)
