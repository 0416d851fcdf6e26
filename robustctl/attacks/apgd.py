"""APGD and APGD-T: step-size-free PGD with momentum (Croce & Hein 2020, "Reliable evaluation of
adversarial robustness with an ensemble of diverse parameter-free attacks", ICML,
arXiv:2003.01690), the gradient attacks of AutoAttack. Distance: Linf or L2.

One run, for k = 0 .. steps-1, with g_k = grad_x of the loss L at x_k (one forward and one
backward pass) and s(g) = sign(g) (Linf) or g / (||g||_2 + 1e-12) (L2)::

    z_{k+1} = P(x_k + eta_k * s(g_k))
    x_{k+1} = P(x_k + a * (z_{k+1} - x_k) + (1 - a) * (x_k - x_{k-1}))   a = momentum (0.75),
                                                                          a = 1 at k = 0

P projects onto the eps-ball around x intersected with the box [0, 1] (as in
:mod:`~robustctl.attacks.pgd`). Start: x_0 = clip(x + delta) with delta on the ball's boundary, as
the authors draw it: Linf delta = eps * u / ||u||_inf with u ~ U(-1, 1)^n, L2 delta = eps * z /
||z||_2 with z ~ N(0, I). eta_0 = 2 eps for every example.

Step-size schedule (per example): checkpoints w_j = ceil(p_j * steps) with p_0 = 0, p_1 = 0.22,
p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06) (:func:`checkpoints`; 0, 22, 41, 57, 70, 80, 87,
93, 99 for 100 steps). After iteration w_j, eta is halved and the iterate reset to the example's
best point x_max (its gradient kept from when it was reached, so no extra pass) if

    (a) #{i in [w_{j-1}, w_j) : L(x_{i+1}) > L(x_i)} < rho * (w_j - w_{j-1}), or
    (b) eta was not halved at w_{j-1} and L_max did not increase since w_{j-1}

(at the first checkpoint only (a) applies, as in the authors' code). Each example keeps its
highest-loss iterate x_max and, separately, its first misclassified (or, targeted, on-target)
iterate; the run returns the latter where one was found, else x_max.

Losses (``loss``): ``ce`` = CE(f(x), y), or -CE(f(x), t) when a target is given; ``dlr`` =
:func:`dlr_loss`, or :func:`dlr_loss_targeted` with a target. Both ascend the prediction logits
(``self.logits``). Restarts: the examples not yet successful are attacked again from a fresh random
start; each keeps its first success, else the highest-loss point over the runs. Examples the clean
image already fools are returned unchanged and not attacked. Cost: ``passes`` grows by the batch
size per gradient evaluation, i.e. (steps + 1) * eot * examples per run.

APGD-T (:class:`APGDT`, AutoAttack's targeted version): targeted DLR toward the k-th highest clean
logit, k = 2 .. n_target_classes + 1, one run (times ``restarts``) per target class on the examples
still not misclassified; success is untargeted (pred != y), as AutoAttack counts it. For the
Attack API it is an untargeted attack (``targeted="none"`` only); an explicit ``target`` passed to
``__call__`` replaces the ranked classes: one targeted-DLR run toward it, success = pred == target.

Departures from the authors' code (arXiv:2003.01690 and fra31/auto-attack): checkpoints follow the
paper's ceil formula (the code floors the segment lengths; identical for 100 steps); condition (a)
uses the paper's strict ``<`` and counts the first increase against L(x_0) and after a reset against
L(x_max); an example never fooled returns x_max (the code returns the clean image); the first
adversarial iterate is kept (the code keeps the last); random draws come from the attack's seeded
generator.

Arguments:
    model (nn.Module): images [N, C, H, W] in [0, 1] -> logits [N, K].
    eps (float): budget in pixel units. Default 0.05.
    norm (str): "linf" | "l2". Default "linf".
    loss (str): "ce" | "dlr" (APGD only; APGD-T always uses targeted DLR). Default "ce".
    steps (int): iterations per run. Default 100.
    restarts (int): runs from independent random starts (per target class for APGD-T). Default 1.
    rho (float): the oscillation threshold of condition (a). Default 0.75.
    momentum (float): the paper's alpha, weight of the new step against x_k - x_{k-1}.
        Default 0.75.
    n_target_classes (int): APGD-T only: target classes tried per example (capped at K - 1).
        Default 9.
    eot (int): evaluations averaged per step (expectation over transformations, for randomized
        models; AutoAttack's ``rand`` version: 20). Default 1.
    targeted, seed: see :class:`~robustctl.attacks.base.Attack` (APGD-T: "none" only).

Example::

    >>> x_adv, success, *_ = APGD(model, eps=8 / 255, loss="dlr")(x, y)
    >>> x_adv, success, *_ = APGDT(model, eps=8 / 255, n_target_classes=9)(x, y)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from robustctl.attacks.base import (
    PROJECTIONS,
    BoundedAttack,
    BoundedAttackConfig,
    flat_norm,
    random_on_sphere,
)
from robustctl.config.validation import require

LOSSES = ("ce", "dlr")
# the checkpoint schedule in hundredths of the run (exact integers, so ceil is never off by float
# round-off): p_1 = 0.22, segments shrink by 0.03 per checkpoint down to 0.06
FIRST_SEGMENT, SEGMENT_DECAY, MIN_SEGMENT = 22, 3, 6


# --------------------------------------------------------------------------------------- losses
def dlr_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Difference of logits ratio, per example [N]::

        DLR(z, y) = -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12)

    with z_pi1 >= z_pi2 >= ... the logits sorted in descending order. Invariant to shifting and to
    positive scaling of z; > 0 exactly when the example is misclassified. Needs K >= 3 classes.
    """
    if logits.shape[1] < 3:
        raise ValueError(f"the DLR loss needs at least 3 classes, got {logits.shape[1]}")
    top = logits.sort(dim=1, descending=True).values
    z_y = logits.gather(1, y.view(-1, 1)).squeeze(1)
    # the largest other logit: the runner-up when y is on top, else the top one
    other = torch.where(logits.argmax(1) == y, top[:, 1], top[:, 0])
    return -(z_y - other) / (top[:, 0] - top[:, 2] + 1e-12)


def dlr_loss_targeted(logits: Tensor, y: Tensor, target: Tensor) -> Tensor:
    """Targeted difference of logits ratio, per example [N]::

        DLR_t(z, y, t) = -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)

    with the logits sorted in descending order; ascending it pushes z_t above z_y. Invariant to
    shifting and to positive scaling of z. Needs K >= 4 classes.
    """
    if logits.shape[1] < 4:
        raise ValueError(f"the targeted DLR loss needs at least 4 classes, got {logits.shape[1]}")
    top = logits.sort(dim=1, descending=True).values
    z_y = logits.gather(1, y.view(-1, 1)).squeeze(1)
    z_t = logits.gather(1, target.view(-1, 1)).squeeze(1)
    return -(z_y - z_t) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


def checkpoints(steps: int) -> list[int]:
    """The iterations w_j = ceil(p_j * steps) after which the step size may be halved, from
    w_0 = 0, distinct and <= steps: p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03,
    0.06). For 100 steps: [0, 22, 41, 57, 70, 80, 87, 93, 99]."""
    hundredths = [0, FIRST_SEGMENT]
    while True:
        segment = max(hundredths[-1] - hundredths[-2] - SEGMENT_DECAY, MIN_SEGMENT)
        if hundredths[-1] + segment > 100:
            break
        hundredths.append(hundredths[-1] + segment)
    marks = [-(-p * steps // 100) for p in hundredths]  # exact integer ceil
    return sorted({w for w in marks if w <= steps})


# --------------------------------------------------------------------------------------- configs
@dataclass
class ApgdRunConfig(BoundedAttackConfig):
    """The options of one APGD run, shared by APGD and APGD-T."""

    steps: int = 100
    restarts: int = 1
    rho: float = 0.75
    momentum: float = 0.75
    eot: int = 1  # gradient averaged over this many evaluations (randomized models)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.positive("steps", "restarts", "eot")
        for key in ("rho", "momentum"):
            value = getattr(self, key)
            require(0 < value <= 1, f"attack.{key}", f"must be in (0, 1], got {value}")


@dataclass
class ApgdConfig(ApgdRunConfig):
    """APGD: ``steps`` momentum steps with the checkpoint step-size schedule, loss ce | dlr."""

    name: str = "apgd"
    loss: str = "ce"

    def __post_init__(self) -> None:
        super().__post_init__()
        require(
            self.loss in LOSSES,
            "attack.loss",
            f"must be one of {', '.join(LOSSES)}; got {self.loss!r}",
        )


@dataclass
class ApgdTConfig(ApgdRunConfig):
    """APGD-T: targeted DLR toward each of the ``n_target_classes`` runner-up classes in turn;
    untargeted success."""

    target_modes: ClassVar[tuple[str, ...]] = ("none",)

    name: str = "apgd_t"
    n_target_classes: int = 9

    def __post_init__(self) -> None:
        super().__post_init__()
        self.positive("n_target_classes")


# --------------------------------------------------------------------------------------- attacks
LossFn = Callable[[Tensor], Tensor]  # logits [n, K] -> per-example loss [n]
Objective = Callable[[Tensor], tuple[Tensor, Tensor, Tensor]]  # x_k -> (loss, grad, success)


class APGD(BoundedAttack):
    method = "apgd"
    config_type = ApgdConfig

    # ----------------------------------------------------------------------- one run of APGD
    def random_start(self, x: Tensor) -> Tensor:
        """x + delta with delta on the eps-sphere of the norm (the authors' draw), clipped to
        [0, 1]."""
        return random_on_sphere(x, self.eps, self.norm, self.generator(x.device))

    def direction(self, grad: Tensor) -> Tensor:
        """The steepest-ascent direction of the norm: sign(g) (Linf), g / ||g||_2 (L2)."""
        if self.norm == "linf":
            return grad.sign()
        return grad / (flat_norm(grad) + 1e-12).view(-1, *([1] * (grad.dim() - 1)))

    def loss_and_grad(self, x_k: Tensor, loss_fn: LossFn) -> tuple[Tensor, Tensor, Tensor]:
        """(per-example loss [n], grad_x of its sum, logits) at x_k: one forward + backward, or
        with ``eot`` > 1 the means of loss, gradient and logits over ``eot`` of them (expectation
        over the transformations of a randomized model)."""
        x_k = x_k.detach().requires_grad_(True)
        loss_sum = grad_sum = logits_sum = None
        for _ in range(self.eot):
            logits = self.logits(x_k)
            loss = loss_fn(logits)
            (grad,) = torch.autograd.grad(loss.sum(), x_k)
            self.passes += len(x_k)
            loss_sum = loss.detach() if loss_sum is None else loss_sum + loss.detach()
            grad_sum = grad if grad_sum is None else grad_sum + grad
            logits_sum = logits.detach() if logits_sum is None else logits_sum + logits.detach()
        assert loss_sum is not None and grad_sum is not None and logits_sum is not None
        return loss_sum / self.eot, grad_sum / self.eot, logits_sum / self.eot

    def objective(self, loss_fn: LossFn, is_success: Callable[[Tensor], Tensor]) -> Objective:
        """The run's objective from a loss of the logits and a success test of them: x_k ->
        (loss [n], its gradient, success [n]) (:meth:`loss_and_grad`)."""

        def evaluate(x_k: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            loss, grad, logits = self.loss_and_grad(x_k, loss_fn)
            return loss, grad, is_success(logits)

        return evaluate

    def run_once(self, x: Tensor, objective: Objective) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One APGD run from a random start, ascending ``objective`` (x_k -> loss [n], its
        gradient, success [n]; :meth:`objective`, or a detector-aware one): (x_max, L_max, first
        successful iterate, found)."""
        n, view = len(x), (-1, *([1] * (x.dim() - 1)))

        def project(v: Tensor) -> Tensor:
            return PROJECTIONS[self.norm](v, x, self.eps)

        def pick(mask: Tensor, a: Tensor, b: Tensor) -> Tensor:
            return torch.where(mask.view(view) if a.dim() > 1 else mask, a, b)

        x_k = self.random_start(x)
        loss, grad, found = objective(x_k)
        x_found = x_k.clone()
        x_best, loss_best, grad_best = x_k.clone(), loss.clone(), grad.clone()
        eta = torch.full((n,), 2.0 * self.eps, device=x.device)
        x_prev, loss_prev = x_k, loss
        increases = torch.zeros(n, device=x.device)
        best_at_check = loss_best.clone()
        halved_at_check = torch.ones(n, dtype=torch.bool, device=x.device)  # (b) off at w_1
        marks, last_mark = set(checkpoints(self.steps)) - {0}, 0
        a = self.momentum
        for k in range(self.steps):
            with torch.no_grad():
                z = project(x_k + eta.view(view) * self.direction(grad))
                if k > 0:
                    z = project(x_k + a * (z - x_k) + (1 - a) * (x_k - x_prev))
            x_prev, x_k = x_k, z
            loss, grad, ok = objective(x_k)
            newly = ok & ~found
            x_found = pick(newly, x_k, x_found)
            found = found | newly
            increases += (loss > loss_prev).float()
            loss_prev = loss
            better = loss > loss_best
            x_best, grad_best = pick(better, x_k, x_best), pick(better, grad, grad_best)
            loss_best = pick(better, loss, loss_best)
            if k + 1 in marks:
                window, last_mark = k + 1 - last_mark, k + 1
                halve = (increases < self.rho * window) | (
                    ~halved_at_check & (loss_best <= best_at_check)
                )
                halved_at_check, best_at_check = halve, loss_best.clone()
                increases.zero_()
                eta = pick(halve, eta / 2, eta)
                x_k, grad = pick(halve, x_best, x_k), pick(halve, grad_best, grad)
                loss_prev = pick(halve, loss_best, loss_prev)
        return x_best, loss_best, x_found, found

    # ------------------------------------------------------------------ restarts and targets
    def objectives(
        self, x: Tensor, y: Tensor, target: Tensor | None, clean: Tensor
    ) -> Iterator[Callable[[Tensor], LossFn]]:
        """The losses of the runs in order: each maps the indices still attacked to a loss of
        their logits. APGD: ``restarts`` runs of ce | dlr (targeted when a target is given)."""

        def make(idx: Tensor) -> LossFn:
            y_i, t_i = y[idx], None if target is None else target[idx]
            if self.loss == "ce":
                if t_i is None:
                    return lambda z: F.cross_entropy(z, y_i, reduction="none")
                return lambda z: -F.cross_entropy(z, t_i, reduction="none")
            if t_i is None:
                return lambda z: dlr_loss(z, y_i)
            return lambda z: dlr_loss_targeted(z, y_i, t_i)

        for _ in range(self.restarts):
            yield make

    def perturb(self, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        with torch.no_grad():
            clean = self.logits(x)
        done = self.is_success(clean.argmax(1), y, target)  # already fooled: left unchanged
        x_out = x.clone()
        best = torch.full((len(x),), float("-inf"), device=x.device)
        for make_loss in self.objectives(x, y, target, clean):
            todo = (~done).nonzero().squeeze(1)
            if todo.numel() == 0:
                break
            y_i, t_i = y[todo], None if target is None else target[todo]

            def is_success(logits: Tensor, y_i: Tensor = y_i, t_i: Tensor | None = t_i) -> Tensor:
                return self.is_success(logits.argmax(1), y_i, t_i)

            objective = self.objective(make_loss(todo), is_success)
            x_best, loss_best, x_found, found = self.run_once(x[todo], objective)
            higher = (loss_best > best[todo]) & ~found
            x_out[todo[higher]] = x_best[higher]
            best[todo[higher]] = loss_best[higher]
            x_out[todo[found]] = x_found[found]
            done[todo[found]] = True
        return x_out


class APGDT(APGD):
    method = "apgd_t"
    config_type = ApgdTConfig

    def objectives(
        self, x: Tensor, y: Tensor, target: Tensor | None, clean: Tensor
    ) -> Iterator[Callable[[Tensor], LossFn]]:
        """Targeted DLR toward the k-th highest clean logit, k = 2 .. n_target_classes + 1
        (capped at K), ``restarts`` runs each; an explicit target replaces the ranked classes."""

        def toward(classes: Tensor) -> Callable[[Tensor], LossFn]:
            def make(idx: Tensor) -> LossFn:
                y_i, t_i = y[idx], classes[idx]
                return lambda z: dlr_loss_targeted(z, y_i, t_i)

            return make

        if target is not None:
            ranked = [target]
        else:
            order = clean.argsort(dim=1, descending=True)
            last = min(self.n_target_classes + 1, clean.shape[1])
            ranked = [order[:, k - 1] for k in range(2, last + 1)]
        for classes in ranked:
            for _ in range(self.restarts):
                yield toward(classes)
