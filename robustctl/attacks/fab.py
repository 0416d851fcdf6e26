"""FAB and FAB-T: the fast adaptive boundary attack (Croce & Hein 2020, "Minimally distorted
adversarial examples with a fast adaptive boundary attack", ICML, arXiv:1907.02044), AutoAttack's
minimum-norm member. Distance: Linf or L2.

One iteration at the current point x_k (x_0 = x, or a random start for later restarts), with
f_j = z_j - z_y the difference of logits and g_j its input gradient:

1. Linearize: the decision boundary toward class j is approximated by the hyperplane
   {v : g_j . (v - x_k) + f_j(x_k) = 0}; FAB takes the class whose hyperplane is nearest,
   j* = argmin_{j != y} |f_j| / ||g_j||_q (q the dual norm: L1 for Linf, L2 for L2); FAB-T takes
   the target class.
2. Project x_k and the original x onto that hyperplane within the box [0, 1]
   (:func:`project_onto_hyperplane`, exact): steps d_k and d_0.
3. Step, biased toward the original image:
   x_{k+1} = clip((1 - a)(x_k + eta d_k) + a (x + eta d_0)),
   a = min(||d_k|| / (||d_k|| + ||d_0||), alpha_max), eta the overshoot (1.05).
4. If x_{k+1} is misclassified, it is recorded when closer to x than the best so far, and the
   iterate moves back toward x: x_{k+1} = x + beta (x_{k+1} - x) (beta 0.9).

The result per example is the closest misclassified point found (``last_distances`` holds its
distance, inf where none); as an attack at budget ``eps`` an example counts as broken when that
distance is at most eps (the base projects onto the eps-ball, so a farther point is returned
clipped and is not adversarial). Restarts: the first run starts at x, each later one at a random
point at distance eps / 2 (Linf: x + eps/2 u / ||u||_inf, u ~ U(-1, 1); L2: x + eps/2 z / ||z||_2,
z ~ N(0, I)), on the examples not yet broken at eps. Misclassification is untargeted success for
both attacks, as AutoAttack counts it.

FAB-T (:class:`FABT`): runs toward the 2nd, 3rd, ... highest clean logit in turn
(``n_target_classes``, AutoAttack: 9), ``restarts`` runs per target on the examples not yet broken
at eps. Cost per iteration and example: FAB-T one forward and backward pass for the target's
difference of logits, FAB one per class (the Jacobian of all K logits), plus one forward pass for
the misclassification check; ``passes`` counts the backward passes.

Departures from the authors' code (fra31/auto-attack, fab_base.py): the hyperplane projection is
solved exactly by sorting the coordinates' breakpoints (:func:`project_onto_hyperplane`) instead
of their iterative solver; when the hyperplane cannot be reached inside the box the projection
returns the box point that gets closest to it (the authors' code returns their solver's last
iterate); random draws come from the attack's seeded generator.

Arguments:
    model (nn.Module): images [N, C, H, W] in [0, 1] -> logits [N, K].
    eps (float): budget in pixel units (success threshold and restart radius). Default 0.05.
    norm (str): "linf" | "l2". Default "linf".
    steps (int): iterations per run. Default 100.
    restarts (int): runs per target (FAB: in all). Default 1.
    alpha_max (float): the largest weight of the original image's projection. Default 0.1.
    eta (float): overshoot of the projection steps. Default 1.05.
    beta (float): the backward step after a misclassified iterate. Default 0.9.
    n_target_classes (int): FAB-T only. Default 9.
    targeted, seed: see :class:`~robustctl.attacks.base.Attack` ("none" only).

Example::

    >>> attack = FABT(model, eps=8 / 255)
    >>> x_adv, success, *_ = attack(x, y)
    >>> attack.last_distances  # the smallest Linf distance found per example
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from robustctl.attacks.base import (
    AttackConfig,
    BoundedAttack,
    BoundedAttackConfig,
    random_on_sphere,
)
from robustctl.config.validation import require


# ------------------------------------------------------------------ projection onto a hyperplane
def project_onto_hyperplane(p: Tensor, w: Tensor, b: Tensor, norm: str) -> Tensor:
    """The smallest step d (Linf or L2 norm) with w . (p + d) = b and p + d in [0, 1], per row.

    p, w: [n, D]; b: [n]. With c = b - w . p and w' = sign(c) w, every coordinate moves in the
    direction of w' by m_i(tau) = min(tau k_i, r_i), r_i its room to the box edge in that direction
    (1 - p_i where w'_i > 0, p_i where w'_i < 0), k_i = |w_i| (L2: d = clip(tau w')) or 1 (Linf:
    every useful coordinate moves by the same amount, capped by its room). The progress
    G(tau) = sum_i |w_i| m_i(tau) is piecewise linear and non-decreasing with breakpoints
    tau_i = r_i / k_i; sorting them gives the exact tau with G(tau) = |c|, the minimizer of both
    norms (KKT). When |c| exceeds G(inf), every coordinate takes its whole room: the box point
    closest to the hyperplane. Coordinates with w_i = 0 do not move.
    """
    c = b - (w * p).sum(1)
    direction = torch.sign(c).unsqueeze(1) * w
    room = torch.where(direction > 0, 1 - p, p).clamp_min(0.0)
    weight = direction.abs()
    rate = weight if norm == "l2" else (weight > 0).to(weight.dtype)
    breaks = torch.where(rate > 0, room / rate.clamp_min(1e-30), torch.full_like(room, torch.inf))
    breaks, order = breaks.sort(1)
    weight, room, rate = (t.gather(1, order) for t in (weight, room, rate))
    saturated = (weight * room).cumsum(1)  # progress of coordinates 0..i once all are full
    slope_after = (weight * rate).flip(1).cumsum(1).flip(1) - weight * rate  # sum over j > i
    progress = torch.where(breaks.isinf(), saturated, saturated + breaks * slope_after)
    need = c.abs().unsqueeze(1)
    k = (progress < need).sum(1, keepdim=True)  # the first breakpoint at which G >= |c|
    full = k.squeeze(1) == progress.shape[1]
    prev = (k - 1).clamp_min(0)
    saturated_before = torch.where(k > 0, saturated.gather(1, prev), torch.zeros_like(need))
    slope = torch.where(k > 0, slope_after.gather(1, prev), (weight * rate).sum(1, keepdim=True))
    tau = ((need - saturated_before) / slope.clamp_min(1e-30)).clamp_min(0.0)
    tau = torch.where(full.unsqueeze(1), torch.full_like(tau, torch.inf), tau)
    moved = torch.minimum(tau * rate, room)
    moved = torch.where(rate > 0, moved, torch.zeros_like(moved))
    step = torch.empty_like(moved).scatter_(1, order, moved)
    return torch.sign(direction) * step


# --------------------------------------------------------------------------------------- configs
@dataclass
class FabConfig(BoundedAttackConfig):
    """FAB: ``steps`` boundary projections per run, toward the nearest linearized boundary."""

    target_modes: ClassVar[tuple[str, ...]] = ("none",)

    name: str = "fab"
    steps: int = 100
    restarts: int = 1
    alpha_max: float = 0.1
    eta: float = 1.05
    beta: float = 0.9

    def __post_init__(self) -> None:
        super().__post_init__()
        self.positive("steps", "restarts", "eta")
        require(
            0 <= self.alpha_max <= 1,
            "attack.alpha_max",
            f"must be in [0, 1], got {self.alpha_max}",
        )
        require(0 < self.beta < 1, "attack.beta", f"must be in (0, 1), got {self.beta}")


@dataclass
class FabTConfig(FabConfig):
    """FAB-T: FAB toward each of the ``n_target_classes`` runner-up classes in turn."""

    name: str = "fab_t"
    n_target_classes: int = 9

    def __post_init__(self) -> None:
        super().__post_init__()
        self.positive("n_target_classes")


# --------------------------------------------------------------------------------------- attacks
class FAB(BoundedAttack):
    method = "fab"
    config_type = FabConfig

    def __init__(
        self, model: nn.Module, config: AttackConfig | None = None, /, **params: Any
    ) -> None:
        super().__init__(model, config, **params)
        self.last_distances = torch.zeros(0)

    def distance(self, delta: Tensor) -> Tensor:
        p = float("inf") if self.norm == "linf" else 2.0
        return delta.flatten(1).norm(p=p, dim=1)

    def boundary(self, x_k: Tensor, y: Tensor, target: Tensor | None) -> tuple[Tensor, Tensor]:
        """(f [n], g [n, D]): the difference of logits z_j - z_y of the class j whose linearized
        boundary is nearest (or of the target) at x_k, and its input gradient."""
        x_k = x_k.detach().requires_grad_(True)
        logits = self.logits(x_k)
        z_y = logits.gather(1, y.view(-1, 1)).squeeze(1)
        classes = [target] if target is not None else None
        if classes is None:  # every other class: the Jacobian, one backward pass per class
            k = logits.shape[1]
            classes = [torch.full_like(y, j) for j in range(k)]
        values, grads = [], []
        for i, j in enumerate(classes):
            f = logits.gather(1, j.view(-1, 1)).squeeze(1) - z_y
            (g,) = torch.autograd.grad(f.sum(), x_k, retain_graph=i < len(classes) - 1)
            self.passes += len(x_k)
            values.append(f.detach())
            grads.append(g.detach().flatten(1))
        f, g = torch.stack(values, 1), torch.stack(grads, 1)  # [n, m], [n, m, D]
        if target is None:
            dual = 1.0 if self.norm == "linf" else 2.0
            gap = f.abs() / (g.norm(p=dual, dim=2) + 1e-12)
            gap = gap.scatter(1, y.view(-1, 1), torch.inf)  # j = y is no boundary
            pick = gap.argmin(1)
        else:
            pick = torch.zeros_like(y)
        rows = torch.arange(len(y), device=y.device)
        return f[rows, pick], g[rows, pick]

    def random_start(self, x: Tensor) -> Tensor:
        """A random point at distance eps / 2 (the authors' restart)."""
        return random_on_sphere(x, 0.5 * self.eps, self.norm, self.generator(x.device))

    def run_once(
        self, x: Tensor, y: Tensor, target: Tensor | None, random_start: bool
    ) -> tuple[Tensor, Tensor]:
        """One FAB run: (closest misclassified point [n, ...] (x where none), its distance [n],
        inf where none)."""
        n, shape = len(x), x.shape
        x0 = x.flatten(1)
        x_k = self.random_start(x) if random_start else x.clone()
        best, best_dist = x.clone(), torch.full((n,), torch.inf, device=x.device)
        for _ in range(self.steps):
            f, g = self.boundary(x_k, y, target)
            b = (g * x_k.flatten(1)).sum(1) - f  # the hyperplane g . v = b
            d = project_onto_hyperplane(
                torch.cat([x_k.flatten(1), x0]), torch.cat([g, g]), torch.cat([b, b]), self.norm
            )
            d_k, d_0 = d[:n], d[n:]
            len_k = self.distance(d_k).clamp_min(1e-8)
            len_0 = self.distance(d_0).clamp_min(1e-8)
            a = (len_k / (len_k + len_0)).clamp(0.0, self.alpha_max).view(-1, 1)
            step = (1 - a) * (x_k.flatten(1) + self.eta * d_k) + a * (x0 + self.eta * d_0)
            x_k = step.clamp(0.0, 1.0).view(shape)
            with torch.no_grad():
                fooled = self.logits(x_k).argmax(1) != y
            dist = self.distance(x_k - x)
            closer = fooled & (dist < best_dist)
            best = torch.where(closer.view(-1, *([1] * (x.dim() - 1))), x_k, best)
            best_dist = torch.where(closer, dist, best_dist)
            back = x + self.beta * (x_k - x)
            x_k = torch.where(fooled.view(-1, *([1] * (x.dim() - 1))), back, x_k)
        return best, best_dist

    def targets(self, clean: Tensor) -> Iterator[Tensor | None]:
        """FAB: one untargeted series of runs."""
        yield None

    def perturb(self, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        with torch.no_grad():
            clean = self.logits(x)
        broken = clean.argmax(1) != y  # already fooled: returned unchanged, distance 0
        x_out = x.clone()
        dist = torch.where(broken, 0.0, torch.inf).to(x.device)
        for toward in self.targets(clean):
            for restart in range(self.restarts):
                todo = (~broken).nonzero().squeeze(1)
                if todo.numel() == 0:
                    break
                t_i = None if toward is None else toward[todo]
                found, found_dist = self.run_once(x[todo], y[todo], t_i, restart > 0)
                closer = found_dist < dist[todo]
                x_out[todo[closer]] = found[closer]
                dist[todo[closer]] = found_dist[closer]
                broken[todo] = dist[todo] <= self.eps
        self.last_distances = dist
        return x_out


class FABT(FAB):
    method = "fab_t"
    config_type = FabTConfig

    def targets(self, clean: Tensor) -> Iterator[Tensor | None]:
        """The k-th highest clean logit, k = 2 .. n_target_classes + 1 (capped at K)."""
        order = clean.argsort(dim=1, descending=True)
        last = min(self.n_target_classes + 1, clean.shape[1])
        for k in range(2, last + 1):
            yield order[:, k - 1]
