"""C&W-wb: the white-box Carlini-Wagner L2 attack against a classifier *and* its detector
(Carlini & Wagner 2017, "Adversarial examples are not easily detected", section 5.2;
docs/method.md section 4.7): the adaptive attack, for every detector of the ``defense`` group.

Same tanh change of variables, Adam and per-example binary search over c as :class:`CW`, on the
detector-aware objective of :mod:`robustctl.threat_models.detector_aware`::

    ||x' - x||_2^2 + c * ( f(x') + lambda * max(b_t(x') - T, 0) )

with its thresholds, starts and targets. Each example keeps its smallest-L2 successful iterate
across iterations and binary steps. By default (``per_example_abort``) an example stops iterating
within a binary step once its own loss stopped falling (Carlini's abort rule, applied per
example) and the batch shrinks to the examples still moving, so the attack's passes
(:attr:`CW.passes`) go to the examples that need them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from robustctl.attacks.cw import CW, CwConfig
from robustctl.threat_models.detector_aware import (
    DetectorAttackConfig,
    DetectorAwareAttack,
    StartingPool,
    WbState,
)

__all__ = ["CWWhiteBox", "CwWbConfig", "StartingPool", "WbState"]


@dataclass
class CwWbConfig(CwConfig, DetectorAttackConfig):
    """C&W-wb (``threat_model.whitebox``): C&W-L2 plus the detector term (the detector-aware
    fields: ``threshold``, ``fpr``, ``density_weight``, ``toward``, ``start``, ``start_pool``,
    see :mod:`robustctl.threat_models.detector_aware`), 3 binary steps x 1000 iterations at step
    0.01 from c = 1, the per-example abort on."""

    name: str = "cw_wb"
    binary_steps: int = 3
    steps: int = 1000
    lr: float = 0.01
    c_init: float = 1.0
    per_example_abort: bool = True


class CWWhiteBox(DetectorAwareAttack, CW):
    """C&W-wb against ``model`` + ``detector`` (module docstring)."""

    method = "cw_wb"
    config_type = CwWbConfig
    group_option = False  # needs a detector: built by the white-box stage, not ``attack=``
    loop_progress: ClassVar[bool] = True  # 3 x 1000 iterations: show step and iteration
