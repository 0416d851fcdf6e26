"""BIM: the basic iterative method, iterated FGSM (Kurakin et al. 2017, "Adversarial examples in the
physical world", arXiv:1607.02533). Distance: Linf.

Update, for k = 0 .. steps-1, starting from x_0 = x::

    x_{k+1} = clip_[0,1]( clip_[x-eps, x+eps]( x_k + alpha * sign(grad_x CE(f(x_k), y)) ) )

(targeted: descend CE(f(x_k), t) instead). This is :class:`~robustctl.attacks.pgd.PGD` with Linf,
no random start and one run. Paper parameters (PDM Table 5): 10 iterations, eps 0.05 and 0.1
(presets ``bim-0.05``, ``bim-0.1``); the step is alpha = eps / steps (eps/10 at 10 iterations)
unless set, so the last iterate can reach the ball's surface.

Arguments:
    model (nn.Module): images [N, C, H, W] in [0, 1] -> logits [N, K].
    eps (float): Linf budget in pixel units. Default 0.05.
    alpha (float | None): step size; None = eps / steps.
    steps (int): iterations. Default 10.
    targeted, seed: see :class:`~robustctl.attacks.base.Attack`.

Example::

    >>> x_adv, success, *_ = BIM(model, eps=0.1)(x, y)
"""

from __future__ import annotations

from dataclasses import dataclass

from robustctl.attacks.pgd import PGD, PgdConfig
from robustctl.config.validation import require


@dataclass
class BimConfig(PgdConfig):
    """BIM: PGD in Linf from x itself, one run; alpha null = eps / steps."""

    name: str = "bim"
    random_start: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        require(
            self.norm == "linf" and not self.random_start and self.restarts == 1,
            "attack.norm",
            "bim is Linf PGD without random start or restarts (use attack=pgd for those)",
        )


class BIM(PGD):
    method = "bim"
    config_type = BimConfig
    alpha_rule = 1.0  # alpha = eps / steps
