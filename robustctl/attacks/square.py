"""Square Attack: a score-based black-box attack by random square-shaped updates (Andriushchenko,
Croce, Flammarion & Hein 2020, "Square Attack: a query-efficient black-box adversarial attack via
random search", ECCV, arXiv:1912.00049), the gradient-free member of AutoAttack. Distance: Linf
or L2. It reads only the model's scores (the prediction logits), never a gradient, so it is the
attack that a defense which masks gradients does not stop.

Objective. Per example, the margin of the true class over the best other one,
m(x) = z_y - max_{j != y} z_j (targeted toward t: m = max_{j != t} z_j - z_t); m <= 0 means fooled.
The search minimizes ``loss``: ``margin`` (m itself, the authors' default) or ``ce`` (-CE(z, y);
targeted: CE(z, t)). A proposal replaces the example's incumbent when it lowers the loss or
fools the model; an example stops being queried once it is fooled.

Window side. At iteration i (0-based) the side is s = round(sqrt(p_i * h * w)), with p_i from
:func:`square_fraction`: p_init, halved after iteration 10, and again after 50, 200, 500, 1000,
2000, 4000, 6000 and 8000, on a 10,000-iteration clock that ``rescale_schedule`` stretches to the
query budget (i -> floor(10000 i / queries)).

Linf (the paper's Algorithm 2). Start: x + eps * r with r in {-1, +1}, one sign per (channel,
column): vertical stripes, clipped to [0, 1]. Proposal: in an s x s window at a random position,
each channel's values of the incumbent move by +2 eps or -2 eps (one sign per channel), then the
whole image is projected back onto the eps-ball and the box, so the window's perturbation becomes
+eps or -eps per channel.

L2 (the paper's Algorithm 3). The perturbations are built from the centred bump
:func:`square_bump`, a unit-norm s x s pattern whose top half is a positive and bottom half a
negative pyramid (:func:`centred_pyramid`), transposed at random. Start: a grid of bumps of side
max(h // 5, 1) with a random sign per (window, channel), scaled to norm eps. Proposal: two random
windows W1, W2 of side s (odd, at least 3); with delta the incumbent's perturbation, W1's new
content per channel is the bump (random sign) plus W1's old content rescaled to unit norm,
rescaled to norm sqrt(max(eps^2 - ||delta||^2, 0) / c + ||delta on W1 u W2||^2); W2 is emptied, W1
written, and the whole perturbation rescaled to norm eps before clipping to the box: the mass of
the two windows moves into W1 with a new bump on top.

Budget and restarts: at most ``queries`` model evaluations per example per run (the start counts
as one); ``restarts`` runs from fresh random starts, each on the examples not yet fooled. Examples
the clean image already fools are returned unchanged and not queried. Cost: ``queries`` grows by
one per example per evaluation; ``last_queries`` [N] holds the evaluations each example of the
last call used (0 for the ones skipped), ``passes`` stays 0 (no backward pass).

Departures from the authors' PyTorch code (fra31/auto-attack, square.py): each example draws its
own window positions and bump orientation (the code draws one per iteration for the whole batch,
the paper's numpy code one per image, as here); a window may sit at the last position h - s (the
code's draw stops one short); the run makes at most ``queries`` evaluations including the start
(the code makes ``queries`` iterations after it); random draws come from the attack's seeded
generator.

Arguments:
    model (nn.Module): images [N, C, H, W] in [0, 1] -> logits [N, K].
    eps (float): budget in pixel units. Default 0.05.
    norm (str): "linf" | "l2". Default "linf".
    queries (int): model evaluations per example and run. Default 5000 (AutoAttack's).
    p_init (float): the first window's share of the image area. Default 0.8.
    restarts (int): runs from independent random starts. Default 1.
    loss (str): "margin" | "ce". Default "margin".
    rescale_schedule (bool): stretch the window schedule to ``queries``. Default True.
    targeted, seed: see :class:`~robustctl.attacks.base.Attack`.

Example::

    >>> attack = Square(model, eps=8 / 255, queries=5000)
    >>> x_adv, success, *_ = attack(x, y)
    >>> attack.last_queries[success].float().median()  # queries per success
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustctl.attacks.base import (
    PROJECTIONS,
    AttackConfig,
    BoundedAttack,
    BoundedAttackConfig,
    flat_norm,
)
from robustctl.config.validation import require

LOSSES = ("margin", "ce")
# iterations (on the 10,000-iteration clock) after which the window fraction halves again
HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
SCHEDULE_CLOCK = 10_000


@dataclass
class SquareConfig(BoundedAttackConfig):
    """Square: random-search over square windows, ``queries`` evaluations per example and run."""

    name: str = "square"
    queries: int = 5000
    p_init: float = 0.8
    restarts: int = 1
    loss: str = "margin"
    rescale_schedule: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        self.positive("queries", "restarts")
        require(0 < self.p_init <= 1, "attack.p_init", f"must be in (0, 1], got {self.p_init}")
        require(
            self.loss in LOSSES,
            "attack.loss",
            f"must be one of {', '.join(LOSSES)}; got {self.loss!r}",
        )


# ------------------------------------------------------------------------------- the schedule
def square_fraction(p_init: float, iteration: int, queries: int, rescale: bool = True) -> float:
    """The window's share of the image area at 0-based ``iteration``: ``p_init`` halved once per
    mark of :data:`HALVINGS` the iteration has passed (strictly), the iteration first mapped onto
    the 10,000-iteration clock when ``rescale`` (floor(10000 * iteration / queries))."""
    clock = int(iteration / queries * SCHEDULE_CLOCK) if rescale else iteration
    return p_init / 2 ** sum(clock > mark for mark in HALVINGS)


def window_side(fraction: float, h: int, w: int, norm: str) -> int:
    """s = round(sqrt(fraction * h * w)), at least 1 (Linf) or an odd number >= 3 (L2), at most
    the image's shorter side."""
    side = round(math.sqrt(fraction * h * w))
    if norm == "l2":
        side = max(side, 3)
        side += 1 - side % 2
    return max(1, min(side, h, w))


# ------------------------------------------------------------------------------ the L2 bumps
@lru_cache(maxsize=64)
def centred_pyramid(rows: int, cols: int) -> Tensor:
    """A [rows, cols] pattern of unit L2 norm: nested squares around (rows // 2, cols // 2), the
    k-th (Chebyshev radius k, k = 0 .. K - 1, K = max(rows, cols) // 2 + 1) adding 1 / (k + 1)^2,
    so a pixel at Chebyshev distance d from the centre holds sum_{k=d}^{K-1} 1 / (k + 1)^2."""
    if rows == 0 or cols == 0:
        return torch.zeros(rows, cols)
    radius = max(rows // 2, cols // 2) + 1
    d = torch.maximum(
        (torch.arange(rows) - rows // 2).abs().view(-1, 1),
        (torch.arange(cols) - cols // 2).abs().view(1, -1),
    )
    terms = 1.0 / torch.arange(1, radius + 1, dtype=torch.float64) ** 2
    tail = terms.flip(0).cumsum(0).flip(0)  # tail[d] = sum_{k >= d} 1 / (k + 1)^2
    pattern = tail[d.clamp(max=radius - 1)].float()
    return pattern / pattern.norm()


def square_bump(side: int) -> Tensor:
    """The [side, side] bump of unit L2 norm: the top side // 2 rows a positive
    :func:`centred_pyramid`, the rest a negative one."""
    top = side // 2
    bump = torch.cat([centred_pyramid(top, side), -centred_pyramid(side - top, side)])
    return bump / bump.norm()


# --------------------------------------------------------------------------- window geometry
def window_offsets(
    n: int, side: int, h: int, w: int, generator: torch.Generator | None, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Per example, the top-left corner (row, column) of a side x side window, uniform over the
    (h - side + 1) x (w - side + 1) positions."""
    top = torch.randint(0, h - side + 1, (n,), generator=generator, device=device)
    left = torch.randint(0, w - side + 1, (n,), generator=generator, device=device)
    return top, left


def window_mask(top: Tensor, left: Tensor, side: int, h: int, w: int) -> Tensor:
    """[n, 1, h, w] bool: True inside each example's window."""
    rows = torch.arange(h, device=top.device).view(1, h) - top.view(-1, 1)
    cols = torch.arange(w, device=top.device).view(1, w) - left.view(-1, 1)
    inside_r, inside_c = (rows >= 0) & (rows < side), (cols >= 0) & (cols < side)
    return (inside_r[:, :, None] & inside_c[:, None, :]).unsqueeze(1)


def window_index(
    image: Tensor, top: Tensor, left: Tensor, side: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Advanced-indexing tensors (batch, channel, row, column) of each example's side x side
    window of ``image`` [n, c, h, w]: ``image[window_index(...)]`` is [n, c, side, side]."""
    steps = torch.arange(side, device=image.device)
    rows = (top.view(-1, 1) + steps).view(-1, 1, side, 1)
    cols = (left.view(-1, 1) + steps).view(-1, 1, 1, side)
    n, c = image.shape[:2]
    batch = torch.arange(n, device=image.device).view(-1, 1, 1, 1)
    chans = torch.arange(c, device=image.device).view(1, -1, 1, 1)
    return batch, chans, rows, cols


def read_window(image: Tensor, top: Tensor, left: Tensor, side: int) -> Tensor:
    """[n, c, side, side]: each example's window content."""
    return image[window_index(image, top, left, side)]


def write_window(image: Tensor, patch: Tensor, top: Tensor, left: Tensor) -> Tensor:
    """A copy of ``image`` [n, c, h, w] with each example's window replaced by ``patch``
    [n, c, side, side]."""
    out = image.clone()
    out[window_index(image, top, left, patch.shape[-1])] = patch
    return out


def unit_l2(t: Tensor) -> Tensor:
    """Each example of ``t`` scaled to L2 norm 1 (a zero example stays zero)."""
    return t / (flat_norm(t) + 1e-12).view(-1, *([1] * (t.dim() - 1)))


# ------------------------------------------------------------------------------------- attack
class Square(BoundedAttack):
    method = "square"
    config_type = SquareConfig

    def __init__(
        self, model: nn.Module, config: AttackConfig | None = None, /, **params: Any
    ) -> None:
        super().__init__(model, config, **params)
        self.queries_used = 0  # model evaluations of single images, over every call
        self.last_queries = torch.zeros(0, dtype=torch.long)

    # ------------------------------------------------------------------------ the objective
    def margin_and_loss(self, x: Tensor, y: Tensor, target: Tensor | None) -> tuple[Tensor, Tensor]:
        """(margin [n], loss [n]) at x (one query per example): see the module docstring. A
        query the target rejects (:meth:`~robustctl.attacks.base.Attack.answer`) scores +inf in
        both: never an improvement, never a success."""
        logits, rejected = self.answer(x)
        self.queries_used += len(x)
        goal = y if target is None else target
        z_goal = logits.gather(1, goal.view(-1, 1)).squeeze(1)
        z_other = logits.scatter(1, goal.view(-1, 1), float("-inf")).amax(1)
        if target is None:
            margin = z_goal - z_other
            loss = (
                margin if self.loss == "margin" else -F.cross_entropy(logits, y, reduction="none")
            )
        else:
            margin = z_other - z_goal
            loss = (
                margin
                if self.loss == "margin"
                else F.cross_entropy(logits, target, reduction="none")
            )
        # unconditionally: an ``if rejected.any()`` would wait on the device every query
        return margin.masked_fill(rejected, math.inf), loss.masked_fill(rejected, math.inf)

    def signs(self, shape: tuple[int, ...], device: torch.device) -> Tensor:
        """Random signs in {-1, +1} from the attack's generator."""
        g = self.generator(device)
        return torch.randint(0, 2, shape, generator=g, device=device).float() * 2 - 1

    def bumps(self, n: int, side: int, device: torch.device) -> Tensor:
        """[n, 1, side, side]: :func:`square_bump`, transposed for a random half of the examples."""
        bump = square_bump(side).to(device)
        flip = self.signs((n,), device) > 0
        return torch.where(flip.view(-1, 1, 1), bump.T, bump).unsqueeze(1)

    # ------------------------------------------------------------------------------ Linf
    def start_linf(self, x: Tensor) -> Tensor:
        n, c, _, w = x.shape
        return (x + self.eps * self.signs((n, c, 1, w), x.device)).clamp(0.0, 1.0)

    def propose_linf(self, x: Tensor, x_best: Tensor, fraction: float) -> Tensor:
        n, c, h, w = x.shape
        side = window_side(fraction, h, w, "linf")
        top, left = window_offsets(n, side, h, w, self.generator(x.device), x.device)
        mask = window_mask(top, left, side, h, w)
        step = 2 * self.eps * self.signs((n, c, 1, 1), x.device)
        return PROJECTIONS["linf"](x_best + mask * step, x, self.eps)

    # -------------------------------------------------------------------------------- L2
    def start_l2(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        side = max(h // 5, 1)
        first = (h - 5 * side) // 2 if h >= 5 * side else 0
        delta = torch.zeros_like(x)
        for top in range(first, h - side + 1, side):
            for left in range(first, w - side + 1, side):
                bump = self.bumps(n, side, x.device) * self.signs((n, c, 1, 1), x.device)
                corner = (
                    torch.full((n,), top, device=x.device),
                    torch.full((n,), left, device=x.device),
                )
                delta = write_window(delta, bump, *corner)
        return (x + self.eps * unit_l2(delta)).clamp(0.0, 1.0)

    def propose_l2(self, x: Tensor, x_best: Tensor, fraction: float) -> Tensor:
        n, c, h, w = x.shape
        side = window_side(fraction, h, w, "l2")
        g = self.generator(x.device)
        top1, left1 = window_offsets(n, side, h, w, g, x.device)
        top2, left2 = window_offsets(n, side, h, w, g, x.device)
        delta = x_best - x
        union = window_mask(top1, left1, side, h, w) | window_mask(top2, left2, side, h, w)
        spare = (self.eps**2 - flat_norm(delta) ** 2).clamp_min(0.0) / c
        mass = (spare + flat_norm(delta * union) ** 2).sqrt().view(-1, 1, 1, 1)
        old = read_window(delta, top1, left1, side)
        old = old / (old.flatten(2).norm(dim=2).view(n, c, 1, 1) + 1e-12)
        new = self.bumps(n, side, x.device) * self.signs((n, c, 1, 1), x.device) + old
        new = new / (new.flatten(2).norm(dim=2).view(n, c, 1, 1) + 1e-12) * mass
        emptied = write_window(delta, torch.zeros_like(new), top2, left2)
        delta = write_window(emptied, new, top1, left1)
        return (x + self.eps * unit_l2(delta)).clamp(0.0, 1.0)

    # --------------------------------------------------------------------------- one run
    def run_once(
        self, x: Tensor, y: Tensor, target: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One random search from a fresh start: (x_best, fooled [n], queries [n])."""
        start = self.start_linf if self.norm == "linf" else self.start_l2
        propose = self.propose_linf if self.norm == "linf" else self.propose_l2
        x_best = start(x)
        margin_best, loss_best = self.margin_and_loss(x_best, y, target)
        queries = torch.ones(len(x), dtype=torch.long, device=x.device)
        for i in range(self.queries - 1):
            active = (margin_best > 0).nonzero().squeeze(1)
            if active.numel() == 0:
                break
            fraction = square_fraction(self.p_init, i, self.queries, self.rescale_schedule)
            t_a = None if target is None else target[active]
            x_new = propose(x[active], x_best[active], fraction)
            margin, loss = self.margin_and_loss(x_new, y[active], t_a)
            queries[active] += 1
            lower = loss < loss_best[active]
            take = lower | (margin <= 0)
            loss_best[active] = torch.where(lower, loss, loss_best[active])
            margin_best[active] = torch.where(take, margin, margin_best[active])
            x_best[active] = torch.where(take.view(-1, 1, 1, 1), x_new, x_best[active])
        return x_best, margin_best <= 0, queries

    def perturb(self, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        with torch.no_grad():
            logits, rejected = self.answer(x)
            done = self.is_success(logits.argmax(1), y, target) & ~rejected
            self.queries_used += len(x)
            x_out = x.clone()
            used = torch.zeros(len(x), dtype=torch.long, device=x.device)
            for _ in range(self.restarts):
                todo = (~done).nonzero().squeeze(1)
                if todo.numel() == 0:
                    break
                t_i = None if target is None else target[todo]
                x_best, fooled, queries = self.run_once(x[todo], y[todo], t_i)
                used[todo] += queries
                # a run's final point replaces the last run's where it fooled the model, and
                # where no run did, the last run's point is returned (the attack's best guess)
                x_out[todo] = x_best
                done[todo[fooled]] = True
        self.last_queries = used
        return x_out
