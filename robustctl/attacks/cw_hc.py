"""C&W-hc: the high-confidence Carlini-Wagner L2 attack used by PDM (Table 5): the objective and
binary search of :class:`~robustctl.attacks.cw.CW` with kappa = 10 and 1000 Adam iterations per
binary step (9 binary steps). A successful iterate must beat every other class by a logit margin
of 10, so the perturbations are larger and the examples sit deep inside the wrong class.

Example::

    >>> x_adv, success, *_ = CWHighConfidence(model)(x, y)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from robustctl.attacks.cw import CW, CwConfig


@dataclass
class CwHcConfig(CwConfig):
    """High-confidence C&W (PDM's C&W-hc): 9 binary steps, 1000 iterations, confidence 10."""

    name: str = "cw_hc"
    steps: int = 1000
    confidence: float = 10.0
    lr: float = 0.01  # Carlini's step for a 1000-iteration budget


class CWHighConfidence(CW):
    method = "cw_hc"
    config_type = CwHcConfig
    loop_progress: ClassVar[bool] = True  # 9 x 1000 iterations: show step and iteration
