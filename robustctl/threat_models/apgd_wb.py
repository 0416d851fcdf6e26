"""APGD-wb: APGD (Croce & Hein 2020; :mod:`robustctl.attacks.apgd`) on the detector-aware objective
of :mod:`robustctl.threat_models.detector_aware`, the adaptive attack of robust accuracy with
rejection (docs/method.md section 8.6): within the eps-ball of the ``norm`` around x it ascends

    -( f(x') + lambda * max(b_t(x') - T, 0) )

(the C&W margin clamped at -kappa plus the detector's bound over the threshold, the objective
C&W-wb and FMN-wb minimize), with APGD's step-size schedule, momentum, checkpoints and restarts
unchanged. An example is broken at the first iterate that is misclassified *and* scored under T
by the detector (its own score under the prediction): a success of the classifier the detector
does not reject. The unsuccessful examples return their highest-objective iterate (``toward =
runner_up``) or the clean image (``every_class``: one run per class t != y, each example keeping
its smallest-L2 success over them, as C&W-wb and FMN-wb do).

Starts: APGD's random start on the eps-sphere around the clean image (``start=clean``; an
other-class start lies outside the ball and is refused). Cost: ``passes`` grows by the examples
attacked per objective evaluation, (steps + 1) per run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from robustctl.attacks.apgd import APGD, ApgdConfig, ApgdRunConfig
from robustctl.config.validation import require
from robustctl.threat_models.detector_aware import (
    DETECTOR_FIELDS,
    DetectorAttackConfig,
    DetectorAwareAttack,
)

__all__ = ["APGDWhiteBox", "ApgdWbConfig", "apgd_wb_config"]


@dataclass
class ApgdWbConfig(ApgdRunConfig, DetectorAttackConfig):
    """APGD's run settings (eps, norm, steps, restarts, rho, momentum) plus the detector-aware
    fields; ``start`` must be ``clean``."""

    name: str = "apgd_wb"

    def __post_init__(self) -> None:
        super().__post_init__()
        require(
            self.start == "clean",
            "attack.start",
            f"{self.name} searches the eps-ball around the clean image; got {self.start!r}",
        )
        require(self.eot == 1, "attack.eot", f"{self.name} takes one evaluation per step")


def apgd_wb_config(detector_side: DetectorAttackConfig, **changes: Any) -> ApgdWbConfig:
    """APGD-wb with ``detector_side``'s threshold, fpr, lambda, kappa and targets (the white-box
    stage's), the clean start, and ``changes`` (eps, norm, steps, restarts, ...)."""
    values = {f: getattr(detector_side, f) for f in DETECTOR_FIELDS}
    values.update({"start": "clean", **changes})
    return ApgdWbConfig(**values)


class APGDWhiteBox(DetectorAwareAttack):
    """APGD-wb against ``model`` + ``detector`` (module docstring)."""

    method = "apgd_wb"
    config_type = ApgdWbConfig
    group_option = False  # needs a detector: built by the robust stage, not ``attack=``

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        run = {f.name: getattr(self.config, f.name) for f in dataclasses.fields(ApgdRunConfig)}
        # the optimizer: its schedule, projection and seeded random starts
        self.optimizer = APGD(self.model, ApgdConfig(**{**run, "name": self.name}))

    def search(
        self,
        x: Tensor,
        y: Tensor,
        target: Tensor | None,
        state: Any,
        label_suffix: str = "",
        start: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """(each example's first detector-aware success, else its highest-objective iterate;
        the squared L2 distance of the success, inf where none), over ``restarts`` runs on the
        examples not yet broken."""
        n = len(x)
        found = torch.zeros(n, dtype=torch.bool, device=x.device)
        best = torch.full((n,), float("-inf"), device=x.device)
        x_out = x.clone()
        for _ in range(self.restarts):
            todo = (~found).nonzero().squeeze(1)
            if todo.numel() == 0:
                break
            x_best, loss_best, x_found, ok = self.optimizer.run_once(
                x[todo], self.objective(y[todo], state.take(todo))
            )
            higher = (loss_best > best[todo]) & ~ok
            x_out[todo[higher]] = x_best[higher]
            best[todo[higher]] = loss_best[higher]
            x_out[todo[ok]] = x_found[ok]
            found[todo[ok]] = True
        l2sq = (x_out - x).flatten(1).square().sum(1)
        return x_out, torch.where(found, l2sq, torch.full_like(l2sq, float("inf")))

    def objective(self, y: Tensor, state: Any) -> Any:
        """x_k -> (-detector-aware objective [n], its gradient, success [n]): one pass."""

        def evaluate(x_k: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            x_k = x_k.detach().requires_grad_(True)
            value, ok = self.iteration_terms(x_k, y, False, state)
            (grad,) = torch.autograd.grad(-value.sum(), x_k)
            self.passes += len(x_k)
            return -value.detach(), grad, ok

        return evaluate
