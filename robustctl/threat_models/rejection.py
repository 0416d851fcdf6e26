"""Robust accuracy with rejection: how many test points a classifier *with its detector* keeps,
worst case per point, under a detector-blind and under an adaptive attack (docs/method.md
section 8.6).

The detector rejects an input whose score under the predicted class exceeds T, the threshold at
false-positive rate ``fpr`` on the clean *validation* images. A point (x, y) is

- **correct with the detector** when f(x) = y and the detector accepts x (a rejected clean image
  is an error: the defended system gives no answer), and
- **defended** against a set of attacks when it is correct with the detector and every
  misclassified example the attacks found within the budget is rejected.

Two attack sets, each a worst case per point:

- **detector-blind**: the ensemble's own breaking examples (:mod:`robustctl.evaluation.
  robust_accuracy`; the attacker does not know the detector): a point whose breaking example
  is rejected stays defended;
- **adaptive**: the detector-blind examples plus APGD-wb (:mod:`robustctl.threat_models.apgd_wb`:
  APGD on misclassification *and* a score under T, through the detector bound C&W-wb uses) on
  the points still defended.

Logged (``robust/``): ``with-detector/clean_accuracy`` and ``with-detector/threshold`` (T),
``detector-blind/robust_accuracy`` and
``apgd-wb/robust_accuracy`` with Wilson intervals over the attacked points, APGD-wb's points
broken, passes per point attacked and seconds, and the threshold as the tag
``robust/detector_threshold``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from robustctl import metric_keys as keys
from robustctl.evaluation.attack_runner import rate_metrics, run_attack
from robustctl.evaluation.robust_accuracy import EnsembleResult
from robustctl.threat_models.apgd_wb import APGDWhiteBox, apgd_wb_config
from robustctl.threat_models.context import (
    ThreatContext,
    detector_scores,
    validation_threshold,
)

CLEAN_REJECTED, BLIND, ADAPTIVE, DEFENDED = (
    "clean rejected",
    "detector-blind",
    "apgd-wb",
    "defended",
)
MISCLASSIFIED = "misclassified"


@dataclass
class RejectionResult:
    """Per point (CPU): the outcome with the detector (``DEFENDED``, ``CLEAN_REJECTED``,
    ``MISCLASSIFIED``, or the attack set that got an accepted misclassified
    example through: ``BLIND`` | ``ADAPTIVE``); the threshold and its source; the cost."""

    outcome: list[str]
    threshold: float
    validation_images: int
    fpr: float
    attacked: int  # points APGD-wb attacked
    passes: int
    seconds: float

    def metrics(self, stage: str = keys.ROBUST) -> dict[str, float]:
        n = len(self.outcome)
        every = torch.ones(n, dtype=torch.bool)
        outcome = self.outcome

        def share_not(*states: str) -> Tensor:
            return torch.tensor([o not in states for o in outcome], dtype=torch.bool)

        def key(attack: str, metric: str) -> str:
            return keys.attack_key(stage, attack, metric)

        wrong = (MISCLASSIFIED, CLEAN_REJECTED)
        out = rate_metrics(
            key(keys.WITH_DETECTOR, keys.CLEAN_ACCURACY_METRIC), share_not(*wrong), every
        )
        out.update(
            rate_metrics(
                key(keys.DETECTOR_BLIND, keys.ROBUST_ACCURACY), share_not(*wrong, BLIND), every
            )
        )
        out.update(
            rate_metrics(
                key(keys.APGD_WB, keys.ROBUST_ACCURACY),
                share_not(*wrong, BLIND, ADAPTIVE),
                every,
            )
        )
        out[key(keys.WITH_DETECTOR, keys.THRESHOLD)] = self.threshold
        out[key(keys.APGD_WB, keys.BROKEN)] = float(outcome.count(ADAPTIVE))
        out[key(keys.APGD_WB, keys.PASSES_PER_POINT)] = self.passes / max(self.attacked, 1)
        out[key(keys.APGD_WB, keys.SECONDS)] = self.seconds
        return out

    def tag(self) -> str:
        return (
            f"{self.threshold:.6g} at fpr {self.fpr:g} on {self.validation_images} clean "
            "validation images"
        )


def rejection_threshold(ctx: ThreatContext, fpr: float) -> tuple[float, int]:
    """(T at false-positive rate ``fpr`` of the detector's clean validation scores, their
    number)."""
    threshold = validation_threshold(
        ctx.detector,
        ctx.model,
        ctx.data,
        ctx.outputs,
        fpr,
        ctx.cfg.evaluate.batch_size,
        "robust accuracy with rejection",
        "set dataset.val_fraction > 0, or defense=none",
    )
    return threshold, len(ctx.data.y_val)


def accepted_misclassified(
    ctx: ThreatContext, x_adv: Tensor, y: Tensor, threshold: float
) -> Tensor:
    """[n] bool: ``x_adv`` is misclassified and the detector accepts it (score <= T)."""
    pred, scores = detector_scores(ctx.model, ctx.detector, x_adv, ctx.cfg.evaluate.batch_size)
    return (pred != y.cpu()) & (scores <= threshold)


def with_rejection(ctx: ThreatContext, result: EnsembleResult) -> RejectionResult:
    """Robust accuracy with rejection (module docstring) of the ensemble ``result`` on ctx's
    points."""
    rc = ctx.cfg.threat_model.robust
    rj = rc.rejection
    threshold, n_val = rejection_threshold(ctx, rj.fpr)
    y = result.labels
    accepted = torch.as_tensor(ctx.clean_scores) <= threshold
    outcome = [
        MISCLASSIFIED if not ok else (DEFENDED if acc else CLEAN_REJECTED)
        for ok, acc in zip((result.clean_pred == y).tolist(), accepted.tolist(), strict=True)
    ]
    broken = (result.broken_by >= 0).nonzero().squeeze(1)
    if broken.numel():
        through = accepted_misclassified(ctx, result.x_adv[broken], y[broken], threshold)
        for i in broken[through].tolist():
            if outcome[i] == DEFENDED:
                outcome[i] = BLIND
    todo = torch.tensor([o == DEFENDED for o in outcome]).nonzero().squeeze(1)
    tm = ctx.cfg.threat_model
    config = apgd_wb_config(
        tm.whitebox,
        name=keys.APGD_WB,
        eps=rc.eps,
        norm=rc.norm,
        steps=rj.steps,
        restarts=rj.restarts,
        toward=rj.toward,
        threshold="detector",
        fpr=rj.fpr,
        seed=tm.seed,
    )
    attack = APGDWhiteBox(ctx.model, ctx.detector, config, thresholds=threshold)
    seconds = 0.0
    if todo.numel():
        run = run_attack(
            attack, ctx.x[todo], ctx.y[todo], tm.batch_size, clean_pred=result.clean_pred[todo]
        )
        seconds = run.seconds
        through = accepted_misclassified(ctx, run.x_adv, y[todo], threshold)
        for i in todo[through].tolist():
            outcome[i] = ADAPTIVE
    return RejectionResult(
        outcome, threshold, n_val, rj.fpr, int(todo.numel()), int(attack.passes), seconds
    )
