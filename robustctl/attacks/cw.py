"""C&W L2: the Carlini-Wagner attack (Carlini & Wagner 2017, "Towards evaluating the robustness of
neural networks", arXiv:1608.04644). Distance: L2. Unbounded (minimal-distortion) attack.

Change of variables (box [0, 1] for free): x'(w) = (tanh(w) + 1) / 2, started from
w_0 = artanh((2x - 1) * (1 - box_shrink)) so that x'(w_0) = x up to box_shrink / 2. For each
example, minimize with Adam (learning rate ``lr``) over w::

    ||x'(w) - x||_2^2 + c * f(x'(w))
    f(x') = max(Z(x')_y - max_{i != y} Z(x')_i, -kappa)        untargeted
    f(x') = max(max_{i != t} Z(x')_i - Z(x')_t, -kappa)        targeted

where Z are the prediction-view logits and kappa the confidence. An iterate counts as successful
when max_{i != y} Z_i - Z_y > kappa (targeted: Z_t - max_{i != t} Z_i > kappa); each example keeps
its smallest-L2 successful iterate over all iterations and binary-search steps (else x itself).

Binary search over c, for the whole batch at once, one c per example: start at ``c_init``; after
each of ``binary_steps`` runs of ``steps`` Adam iterations (each run restarts from w_0 with a fresh
optimizer), an example that succeeded sets hi = min(hi, c), one that failed sets lo = max(lo, c);
then c = (lo + hi) / 2 if an upper bound is known, else c = 10 c. Early abort: every
max(steps // 10, 1) iterations the run stops if the batch's total loss did not fall by 0.01 %;
with ``per_example_abort`` the same rule is applied to each example's own loss, an example that
stopped falling leaves the run, and the batch shrinks to the others (the attack's work then goes
to the examples still moving; :attr:`CW.passes` counts example-iterations, each one forward and
one backward pass).

Paper parameters (PDM Table 5): 9 binary steps, 10 iterations, confidence 0 (``cw``); 9 binary
steps, 1000 iterations, confidence 10 (``cw_hc``, :mod:`robustctl.attacks.cw_hc`). Departures: none
from Carlini's L2 algorithm; with few iterations, pixels at exactly 0 or 1 (tanh saturated) barely
move, so success below 100% on an undefended model is possible; read the success mask.

Arguments:
    model (nn.Module): images [N, C, H, W] in [0, 1] -> logits [N, K].
    binary_steps (int): binary-search steps over c. Default 9.
    steps (int): Adam iterations per binary step. Default 10.
    confidence (float): kappa >= 0. Default 0.
    lr (float): Adam learning rate in w-space. Default 0.1 (``cw_hc``: 0.01). The paper fixes the
        iteration counts, not the step: Carlini's 0.01 is meant for 1000+ iterations, and with the
        paper's 10 it leaves C&W near a no-op (4% success on the digits ResNet-20 of ``make run``,
        87% at 0.1; measured on 100 test images). Budget-reduced configs raise it with the cut.
    c_init (float): initial c. Default 0.01.
    abort_early (bool): stop a run when the loss stops improving. Default True.
    per_example_abort (bool): apply the abort rule per example, shrinking the batch. Default
        False (Carlini's batch rule; C&W-wb turns it on).
    box_shrink (float): shrink of the artanh argument (avoids infinite w at 0 and 1). Default 1e-6.
    targeted, seed: see :class:`~robustctl.attacks.base.Attack`.

Example::

    >>> x_adv, success, *_ = CW(model)(x, y)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from robustctl.attacks.base import Attack, AttackConfig
from robustctl.attacks.progress import LoopProgress
from robustctl.config.validation import require

NO_BOUND = 1e10


@dataclass
class CwConfig(AttackConfig):
    """C&W L2: tanh box, Adam, per-example binary search over c (PDM: 9 steps x 10 iterations)."""

    name: str = "cw"
    binary_steps: int = 9
    steps: int = 10
    confidence: float = 0.0
    lr: float = 0.1  # 10 iterations: a 0.01 step barely moves (module docstring)
    c_init: float = 0.01
    abort_early: bool = True
    per_example_abort: bool = False
    box_shrink: float = 1e-6

    def __post_init__(self) -> None:
        super().__post_init__()
        self.positive("binary_steps", "steps", "lr", "c_init")
        require(self.confidence >= 0, "attack.confidence", f"must be >= 0, got {self.confidence}")
        require(
            0 <= self.box_shrink < 1,
            "attack.box_shrink",
            f"must be in [0, 1), got {self.box_shrink}",
        )


def margins(logits: Tensor, label: Tensor) -> tuple[Tensor, Tensor]:
    """(Z_label, max_{i != label} Z_i), each [N]."""
    z_label = logits.gather(1, label[:, None]).squeeze(1)
    others = logits.masked_fill(
        torch.nn.functional.one_hot(label, logits.shape[1]).bool(), float("-inf")
    )
    return z_label, others.amax(1)


class CW(Attack):
    method = "cw"
    config_type = CwConfig
    # show the binary step and iteration while a batch runs (robustctl.attacks.progress): the
    # long variants (C&W-hc, C&W-wb) do; plain C&W's 9 x 10 iterations are over too soon
    loop_progress: ClassVar[bool] = False

    def objective(self, logits: Tensor, label: Tensor, targeted: bool) -> tuple[Tensor, Tensor]:
        """(f per example, confident-success mask) from the logits of the current iterate."""
        z_label, z_other = margins(logits, label)
        gap = z_label - z_other if targeted else z_other - z_label  # > kappa means success
        return (-gap).clamp(min=-self.confidence), gap > self.confidence

    def prepare(self, x: Tensor, y: Tensor, target: Tensor | None) -> object:
        """Per-batch state the iteration terms need (none for plain C&W; subclasses add theirs)."""
        return None

    def iteration_terms(
        self, x_adv: Tensor, label: Tensor, targeted: bool, state: object
    ) -> tuple[Tensor, Tensor]:
        """(the term c multiplies, per example; success mask) at the current iterate."""
        return self.objective(self.logits(x_adv), label, targeted)

    def perturb(self, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        return self.search(x, y, target, self.prepare(x, y, target))[0]

    def search(
        self,
        x: Tensor,
        y: Tensor,
        target: Tensor | None,
        state: Any,
        label_suffix: str = "",
        start: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """The binary search over c (module docstring) for images ``x`` with the per-batch
        ``state`` of :meth:`prepare`, each run starting from ``start`` (default ``x``; distances
        are always to ``x``): (each example's smallest-L2 successful iterate, else x itself; its
        squared L2 distance, inf where no iterate succeeded). Each iteration adds the number of
        examples it ran to :attr:`passes`."""
        n = len(x)
        view = (-1, *([1] * (x.dim() - 1)))
        label = y if target is None else target
        w0 = torch.atanh((2 * (x if start is None else start) - 1) * (1 - self.box_shrink))
        lo = torch.zeros(n, device=x.device)
        hi = torch.full((n,), NO_BOUND, device=x.device)
        c = torch.full((n,), self.c_init, device=x.device)
        best_l2 = torch.full((n,), float("inf"), device=x.device)
        best_adv = x.clone()
        check_every = max(self.steps // 10, 1)
        total, steps, binary = self.binary_steps * self.steps, self.steps, self.binary_steps
        with LoopProgress(f"  {self.name} batch{label_suffix}", total, self.loop_progress) as bar:
            for step in range(binary):
                run = _Run(self, x, label, state, c, w0)
                for it in range(steps):
                    x_adv = (torch.tanh(run.w) + 1) / 2
                    l2sq = (x_adv - run.x).flatten(1).pow(2).sum(1)
                    f, ok = self.iteration_terms(x_adv, run.label, target is not None, run.state)
                    losses = l2sq + run.c * f
                    (run.w.grad,) = torch.autograd.grad(losses.sum(), run.w)
                    run.optimizer.step()
                    self.passes += len(run.rows)
                    with torch.no_grad():
                        rows = run.rows
                        improved = ok & (l2sq < best_l2[rows])
                        best_l2[rows] = torch.where(improved, l2sq, best_l2[rows])
                        best_adv[rows] = torch.where(improved.view(view), x_adv, best_adv[rows])
                        run.succeeded[rows] |= ok
                    bar.update(
                        step * steps + it + 1, ("step", step + 1, binary), ("iter", it + 1, steps)
                    )
                    if self.abort_early and it % check_every == 0 and not run.keep_going(losses):
                        break
                # an early abort skips the rest of the step's iterations
                bar.update(
                    (step + 1) * steps,
                    ("step", step + 1, binary),
                    ("iter", it + 1, steps),
                    force=True,
                )
                succeeded = run.succeeded
                hi = torch.where(succeeded, torch.minimum(hi, c), hi)
                lo = torch.where(succeeded, lo, torch.maximum(lo, c))
                c = torch.where(hi < NO_BOUND / 10, (lo + hi) / 2, c * 10)
        return best_adv, best_l2


class _Run:
    """One binary step's optimization: Adam on w from w0, over the examples still running
    (``rows``, indices into the batch). Carlini's early abort stops the whole batch when its
    total loss fell by less than 0.01 % since the last check; with ``per_example_abort`` each
    example stops on its own loss, and the run keeps only the others (w, Adam's moments, the
    labels, c and the attack state shrink with it)."""

    def __init__(self, attack: CW, x: Tensor, label: Tensor, state: Any, c: Tensor, w0: Tensor):
        self.attack, self.x_all, self.label_all, self.state_all = attack, x, label, state
        self.rows = torch.arange(len(x), device=x.device)
        self.x, self.label, self.state, self.c = x, label, state, c
        self.w = w0.clone().requires_grad_(True)
        self.optimizer = torch.optim.Adam([self.w], lr=attack.lr)
        self.succeeded = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        self.previous: Tensor | float = float("inf")

    def keep_going(self, losses: Tensor) -> bool:
        """False when the run is over; with ``per_example_abort``, drops the examples whose loss
        did not fall by 0.01 % since the last check."""
        if not self.attack.per_example_abort:
            value = losses.sum().item()
            if value > self.previous * 0.9999:  # type: ignore[operator]
                return False
            self.previous = value
            return True
        value = losses.detach()
        moving = value <= self.previous * 0.9999
        self.previous = value
        if bool(moving.all()):
            return True
        if not bool(moving.any()):
            return False
        self._shrink(moving.nonzero().flatten())
        return True

    def _shrink(self, keep: Tensor) -> None:
        """Keep rows ``keep`` (positions in the current run) of everything per example."""
        self.rows = self.rows[keep]
        self.x, self.label, self.c = self.x_all[self.rows], self.label_all[self.rows], self.c[keep]
        self.state = None if self.state_all is None else self.state_all.take(self.rows)
        self.previous = self.previous[keep]  # type: ignore[index]
        old = self.optimizer.state[self.w]
        self.w = self.w.detach()[keep].requires_grad_(True)
        self.optimizer = torch.optim.Adam([self.w], lr=self.attack.lr)
        self.optimizer.state[self.w] = {
            k: v[keep] if torch.is_tensor(v) and v.dim() > 0 else v for k, v in old.items()
        }
