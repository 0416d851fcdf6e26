"""C&W-hc: the high-confidence Carlini-Wagner L2 attack used by PDM (Table 5): the objective and
binary search of :class:`~robustctl.attacks.cw.CW` with kappa = 10 and 1000 Adam iterations per
binary step (9 binary steps). A successful iterate must beat every other class by a logit margin
of 10, so the perturbations are larger and the examples sit deep inside the wrong class.

Example::

    >>> x_adv, success, *_ = CWHighConfidence(model)(x, y)
"""

from __future__ import annotations

from torch import nn

from robustctl.attacks.cw import CW


class CWHighConfidence(CW):
    method = "cw_hc"

    def __init__(self, model: nn.Module, *, binary_steps: int = 9, steps: int = 1000, confidence: float = 10.0,
                 lr: float = 0.01, **kwargs) -> None:
        super().__init__(model, binary_steps=binary_steps, steps=steps, confidence=confidence, lr=lr, **kwargs)
