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

from torch import nn

from robustctl.attacks.pgd import PGD


class BIM(PGD):
    method = "bim"
    alpha_rule = 1.0   # alpha = eps / steps

    def __init__(self, model: nn.Module, *, eps: float = 0.05, alpha: float | None = None, steps: int = 10,
                 **kwargs) -> None:
        super().__init__(model, eps=eps, alpha=alpha, steps=steps, norm="linf", random_start=False,
                         restarts=1, **kwargs)
