"""FGSM: the fast gradient sign method (Goodfellow et al. 2015, "Explaining and harnessing
adversarial examples", arXiv:1412.6572). Distance: Linf.

Update (one step)::

    untargeted:  x' = clip_[0,1](x + eps * sign(grad_x CE(f(x), y)))
    targeted:    x' = clip_[0,1](x - eps * sign(grad_x CE(f(x), t)))

where f is the model's prediction view (``predict_logits``). Paper parameters (PDM Table 5):
eps 0.05 and 0.1 (presets ``fgsm-0.05``, ``fgsm-0.1``).

Arguments:
    model (nn.Module): images [N, C, H, W] in [0, 1] -> logits [N, K].
    eps (float): Linf budget in pixel units. Default 0.05.
    targeted (str): "none" | "random" | "least_likely" (or pass ``target=`` when calling).
    seed (int | None): seeds random targets. Default 0.

Example::

    >>> attack = FGSM(model, eps=0.1)
    >>> x_adv, success, *_ = attack(x, y)
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from robustctl.attacks.base import BoundedAttack, BoundedAttackConfig
from robustctl.config.validation import require


@dataclass
class FgsmConfig(BoundedAttackConfig):
    """FGSM: one signed-gradient step of size eps (Linf only)."""

    name: str = "fgsm"
    eps: float = 0.05

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.norm == "linf", "attack.norm", f"fgsm is an Linf attack, got {self.norm!r}")


class FGSM(BoundedAttack):
    method = "fgsm"
    config_type = FgsmConfig

    def perturb(self, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        return x + self.eps * self.ascent_grad(x, y, target).sign()
