"""HopSkipJump: a hard-label, query-based minimum-norm attack (Chen, Jordan & Wainwright 2020,
"HopSkipJumpAttack: a query-efficient decision-based attack", IEEE S&P, arXiv:1904.02144), in
the L2 and Linf norms. It reads only the model's *decision* (the predicted class), never a score
or a gradient: what an attacker of a deployed classifier sees. Like FMN it returns, per
example, the smallest perturbation it found (``last_norms``), here within a query budget.

Notation: x the image (d pixels), phi(x') = 1 if x' is adversarial (untargeted: the predicted
class is not y; targeted: it is t), else 0; dist the distance to x in the attack's norm.

1. **Start.** The caller's starting point where it is adversarial (``start=``, one query),
   else up to ``init_trials`` uniform random images per example until one is adversarial,
   then a binary search on the segment from x to it ((1 - a) x + a x', a in [0, 1]) until the
   bracket is under 0.001: a point just on the adversarial side of the boundary.
2. **Per iteration** t = 1 .. ``steps``, at the boundary point x_t:
   - **gradient-direction estimate** from B_t = min(``init_evals`` sqrt(t), ``max_evals``)
     queries: u_b random directions (L2: Gaussian, Linf: uniform in [-1, 1]^d), each scaled to
     unit L2 norm, the probes clip(x_t + delta_t u_b) and u_b recomputed from the clipped probe;
     with s_b = 2 phi(probe_b) - 1, the estimate is mean_b (s_b - mean s) u_b (mean_b s_b u_b
     when all s_b agree); the update v is its L2-normalized value (L2) or its sign (Linf).
     delta_1 = 0.1; delta_t = (gamma / d) dist(x, x'_{t-1}) with x'_{t-1} the previous
     iteration's stepped point (before its binary search), as in the authors' code.
   - **geometric step search**: eps = dist(x, x_t) / sqrt(t), halved until x_t + eps v is
     adversarial; x'_t = clip(x_t + eps v).
   - **binary search** from x toward x'_t to the boundary: L2 on the blend factor a in [0, 1]
     down to theta; Linf on the radius r in [0, dist_inf(x, x'_t)] of the box around x that
     x'_t is clipped to, down to min(theta dist, theta); theta = gamma / d^(3/2) (L2) or
     gamma / d^2 (Linf). The result is x_{t+1}.

Against a target that rejects queries (a model behind its detector:
:meth:`~robustctl.attacks.base.Attack.answer`) a rejected point is not adversarial, so every
search stays among the points the target accepts.

Each example keeps its smallest-distance boundary point; examples the clean image already fools
are returned unchanged (``last_norms`` 0) and not queried further; an example with no adversarial
random start is returned unchanged (``last_norms`` inf).

**Batched.** Every example runs its own iteration on one shared clock t (so the same B_t), and
every search stops per example: the gradient probes of all examples go to the model together
(in chunks of ``chunk`` images), each binary or step search evaluates only the examples whose
own search is still open. This is the work other libraries do one image at a time.

**Budget.** ``queries`` model evaluations per example: an example runs iteration t only while
its queries so far plus B_t fit in the budget; the binary and step searches that finish that
iteration may pass it by a few dozen queries (``last_queries`` says how many each used). The
authors' code has iterations only; ``steps`` bounds those.

Settings: the authors' defaults (gamma 1, init_evals 100, max_evals 10,000, 100 random starts).
ART's ``HopSkipJump`` fixes theta = 0.01 / sqrt(d) (L2) or 0.01 / d (Linf), which is this
parametrization at gamma = 0.01 d; ART returns the stepped point x'_t of its last iteration, the
authors (and this) the boundary point x_{t+1} after it.

Arguments:
    model (nn.Module): images [N, C, H, W] in [0, 1] -> logits [N, K]; only argmax is read.
    norm (str): "l2" | "linf". Default "l2".
    steps (int): iterations. Default 40 (the authors').
    queries (int): model evaluations per example. Default 10,000.
    init_evals, max_evals (int): gradient-estimate probes at t = 1 and at most. 100, 10,000.
    init_trials (int): random images tried for a start. Default 100.
    gamma (float): scales theta and delta (see above). Default 1.0.
    chunk (int): images per model call. Default 8192.
    targeted, seed: see :class:`~robustctl.attacks.base.Attack`.

Example::

    >>> attack = HopSkipJump(model, norm="l2", queries=5000)
    >>> x_adv, success, *_ = attack(x, y)
    >>> attack.last_norms, attack.last_queries  # per example: smallest norm found, queries used
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from robustctl.attacks.base import Attack, AttackConfig, AttackResult, flat_norm
from robustctl.config.validation import require

NORMS = {"l2": 2.0, "linf": float("inf")}
START_BRACKET = 0.001  # the start's binary search (L2 blend), as in the authors' code
MAX_HALVINGS = 60  # the step search: 2^-60 of the distance is below float resolution
Oracle = Callable[[Tensor, Tensor], Tensor]  # (points [M, ...], their examples [M]) -> phi [M]


@dataclass
class HsjConfig(AttackConfig):
    """HopSkipJump: ``steps`` iterations within ``queries`` evaluations per example."""

    name: str = "hsj"
    norm: str = "l2"
    steps: int = 40
    queries: int = 10_000
    init_evals: int = 100
    max_evals: int = 10_000
    init_trials: int = 100
    gamma: float = 1.0
    chunk: int = 8192

    def __post_init__(self) -> None:
        super().__post_init__()
        self.positive("steps", "queries", "init_evals", "max_evals", "init_trials", "gamma")
        self.positive("chunk")
        require(
            self.norm in NORMS,
            "attack.norm",
            f"must be one of {', '.join(NORMS)}; got {self.norm!r}",
        )


def distance(a: Tensor, b: Tensor, norm: str) -> Tensor:
    """[N] per-example distance in ``norm``."""
    return flat_norm(a - b, NORMS[norm])


def column(v: Tensor, like: Tensor) -> Tensor:
    """[N] -> [N, 1, ..., 1], broadcastable against ``like`` [N, ...]."""
    return v.view(-1, *([1] * (like.dim() - 1)))


def toward(x: Tensor, x_adv: Tensor, step: Tensor, norm: str) -> Tensor:
    """The point ``step`` of the way from x to x_adv: the blend (1 - a) x + a x_adv (L2), or
    x_adv clipped to the box of radius r around x (Linf); step [N]."""
    if norm == "l2":
        a = column(step, x)
        return (1 - a) * x + a * x_adv
    r = column(step, x)
    return torch.minimum(torch.maximum(x_adv, x - r), x + r)


class HopSkipJump(Attack):
    """HopSkipJump (module docstring); after a call, :attr:`last_norms` [N] holds each example's
    smallest adversarial distance found (0: the clean image already fooled the model; inf: no
    start found) and :attr:`last_queries` [N] the model evaluations it used."""

    method = "hsj"
    config_type = HsjConfig

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.queries_used = 0  # model evaluations of single images, over every call
        self.last_queries = torch.zeros(0, dtype=torch.long)
        self.last_norms = torch.zeros(0)
        self._given_start: Tensor | None = None

    def __call__(
        self, x: Tensor, y: Tensor, target: Tensor | None = None, start: Tensor | None = None
    ) -> AttackResult:
        """As :class:`~robustctl.attacks.base.Attack`; ``start`` [N, ...]: a starting point per
        example, tried (one query each) before the random ones: where it is adversarial it is
        the start (an attacker's image of another class, for a target that rejects noise)."""
        self._given_start = start
        try:
            return super().__call__(x, y, target)
        finally:
            self._given_start = None

    # ------------------------------------------------------------------------ the oracle
    @torch.no_grad()
    def adversarial(
        self, points: Tensor, owner: Tensor, y: Tensor, target: Tensor | None, used: Tensor
    ) -> Tensor:
        """phi of each point [M, ...] of example ``owner`` [M] (clipped to [0, 1]); counts one
        query per point against its example in ``used``."""
        decisions, refusals = [], []
        for start in range(0, len(points), self.chunk):
            batch = points[start : start + self.chunk].clamp(0.0, 1.0)
            logits, rejected = self.answer(batch)
            decisions.append(logits.argmax(1))
            refusals.append(rejected)
        pred = torch.cat(decisions) if decisions else owner.new_zeros(0)
        refused = torch.cat(refusals) if refusals else owner.new_zeros(0, dtype=torch.bool)
        used.index_add_(0, owner, torch.ones_like(owner))
        self.queries_used += len(points)
        success = self.is_success(pred, y[owner], None if target is None else target[owner])
        return success & ~refused  # a rejected query is no adversarial point

    # ---------------------------------------------------------------------- the searches
    def boundary(
        self,
        x: Tensor,
        x_adv: Tensor,
        idx: Tensor,
        oracle: Oracle,
        bracket: Tensor,
        norm: str,
    ) -> Tensor:
        """Binary search from x [m, ...] toward the adversarial x_adv [m, ...] of examples
        ``idx`` [m], each until its bracket (high - low) is at most ``bracket`` [m]: the point
        at ``high``, on the adversarial side. L2 searches the blend factor in [0, 1], Linf the
        box radius in [0, dist_inf(x, x_adv)]."""
        high = torch.ones(len(x), device=x.device) if norm == "l2" else distance(x_adv, x, norm)
        low = torch.zeros_like(high)
        while True:
            open_ = ((high - low) > bracket).nonzero().squeeze(1)
            if open_.numel() == 0:
                return toward(x, x_adv, high, norm)
            mid = (high[open_] + low[open_]) / 2
            ok = oracle(toward(x[open_], x_adv[open_], mid, norm), idx[open_])
            high[open_] = torch.where(ok, mid, high[open_])
            low[open_] = torch.where(ok, low[open_], mid)

    def gradient_direction(
        self, x_b: Tensor, idx: Tensor, oracle: Oracle, delta: Tensor, probes: int
    ) -> Tensor:
        """The update direction at the boundary points x_b [m, ...] from ``probes`` random
        probes each at radius ``delta`` [m] (module docstring, step 2): L2-normalized (the
        caller takes its sign for Linf)."""
        m, shape = len(x_b), x_b.shape[1:]
        generator = self.generator(x_b.device)
        estimate = torch.empty_like(x_b)
        group = max(1, self.chunk // probes)  # examples whose probes fit one model call
        for s in range(0, m, group):
            rows = slice(s, min(s + group, m))
            g = rows.stop - rows.start
            size = (g, probes, *shape)
            if self.norm == "l2":
                u = torch.randn(size, device=x_b.device, generator=generator)
            else:
                u = torch.rand(size, device=x_b.device, generator=generator) * 2 - 1
            u = u / u.flatten(2).norm(dim=2).view(g, probes, *([1] * len(shape)))
            d = delta[rows].view(g, 1, *([1] * len(shape)))
            centre = x_b[rows].unsqueeze(1)
            probe = (centre + d * u).clamp(0.0, 1.0)
            u = (probe - centre) / d
            owner = idx[rows].repeat_interleave(probes)
            sign = oracle(probe.flatten(0, 1), owner).view(g, probes).float() * 2 - 1
            mean = sign.mean(1, keepdim=True)
            unanimous = mean.abs() == 1
            weight = torch.where(unanimous, mean.expand_as(sign), sign - mean)
            grad = (weight.view(g, probes, *([1] * len(shape))) * u).mean(1)
            estimate[rows] = grad
        norms = column(flat_norm(estimate).clamp_min(1e-12), estimate)
        return estimate / norms

    def step_search(
        self, x_b: Tensor, update: Tensor, idx: Tensor, oracle: Oracle, start: Tensor
    ) -> Tensor:
        """Per example the first of ``start``, start/2, start/4, ... [m] at which x_b + eps *
        update is adversarial; returns the clipped stepped points."""
        eps = start.clone()
        todo = torch.arange(len(x_b), device=x_b.device)
        for _ in range(MAX_HALVINGS):
            if todo.numel() == 0:
                break
            ok = oracle(x_b[todo] + column(eps[todo], x_b[todo]) * update[todo], idx[todo])
            todo = todo[~ok]
            eps[todo] = eps[todo] / 2
        eps[todo] = 0.0  # still failing after MAX_HALVINGS: stay on the boundary point
        return (x_b + column(eps, x_b) * update).clamp(0.0, 1.0)

    # ------------------------------------------------------------------------- the attack
    def perturb(self, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        n, d, norm = len(x), x[0].numel(), self.norm
        used = torch.zeros(n, dtype=torch.long, device=x.device)

        def oracle(points: Tensor, owner: Tensor) -> Tensor:
            return self.adversarial(points, owner, y, target, used)

        every = torch.arange(n, device=x.device)
        fooled = oracle(x, every)
        best = x.clone()
        best_dist = torch.where(
            fooled, torch.zeros(n, device=x.device), torch.full((n,), math.inf, device=x.device)
        )
        # 1. starts: the given ones, then random images
        start, found = x.clone(), fooled.clone()
        if self._given_start is not None:
            todo = (~found).nonzero().squeeze(1)
            given = self._given_start.to(x.device, x.dtype)[todo]
            ok = oracle(given, todo)
            start[todo[ok]], found[todo[ok]] = given[ok], True
        generator = self.generator(x.device)
        for _ in range(self.init_trials):
            todo = (~found).nonzero().squeeze(1)
            if todo.numel() == 0:
                break
            noise = torch.rand(x[todo].shape, device=x.device, generator=generator)
            ok = oracle(noise, todo)
            start[todo[ok]], found[todo[ok]] = noise[ok], True
        idx = (found & ~fooled).nonzero().squeeze(1)
        if idx.numel() > 0:
            bracket = torch.full((len(idx),), START_BRACKET, device=x.device)
            x_b = self.boundary(x[idx], start[idx], idx, oracle, bracket, "l2")
            stepped_dist = distance(x_b, x[idx], norm)
            self.keep(best, best_dist, idx, x_b, x[idx], norm)
            theta = self.gamma / (d**1.5 if norm == "l2" else d**2)
            for t in range(1, self.steps + 1):
                probes = min(int(self.init_evals * math.sqrt(t)), self.max_evals)
                alive = (used[idx] + probes <= self.queries).nonzero().squeeze(1)
                if alive.numel() == 0:
                    break
                idx, x_b, stepped_dist = idx[alive], x_b[alive], stepped_dist[alive]
                x_i = x[idx]
                delta = (
                    torch.full((len(idx),), 0.1, device=x.device)
                    if t == 1
                    else self.gamma / d * stepped_dist
                )
                direction = self.gradient_direction(x_b, idx, oracle, delta, probes)
                update = direction if norm == "l2" else direction.sign()
                here = distance(x_b, x_i, norm)
                stepped = self.step_search(x_b, update, idx, oracle, here / math.sqrt(t))
                stepped_dist = distance(stepped, x_i, norm)
                bracket = (
                    torch.full_like(stepped_dist, theta)
                    if norm == "l2"
                    else torch.clamp(stepped_dist * theta, max=theta)
                )
                x_b = self.boundary(x_i, stepped, idx, oracle, bracket, norm)
                self.keep(best, best_dist, idx, x_b, x_i, norm)
        self.last_queries = used.cpu()
        self.last_norms = best_dist.cpu()
        return best

    @staticmethod
    def keep(
        best: Tensor, best_dist: Tensor, idx: Tensor, x_b: Tensor, x: Tensor, norm: str
    ) -> None:
        """Each example of ``idx`` keeps the boundary point x_b where it is nearer to x than its
        best so far (in place)."""
        dist = distance(x_b, x, norm)
        closer = dist < best_dist[idx]
        best[idx[closer]] = x_b[closer]
        best_dist[idx[closer]] = dist[closer]
