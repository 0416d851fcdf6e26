"""White-box threat model (PDM Appendix D; Carlini & Wagner 2017, "Adversarial examples are not
easily detected"): the attacker knows the classifier *and* the detector, and runs C&W-wb through
both (:class:`robustctl.attacks.cw_wb.CWWhiteBox`, parameters ``threat_model.whitebox``).

Logged (PDM Table 3): ``whitebox/cw_wb/{success_rate,distortion,l2,linf,l0}`` (success over the
clean-correct examples of the attacked subset, distortions over the successful ones), the
detection AUC of the target's detector over the (clean, adversarial) pairs with its pair count,
and a note when the budget ran out before the attack's goal (every example succeeds and AUC <= 0.5).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from robustctl import metric_keys as keys
from robustctl.attacks.cw_wb import CwWbConfig, CWWhiteBox
from robustctl.console import console
from robustctl.defenses import require_detector, threshold_at
from robustctl.evaluation.attack_runner import run_attack
from robustctl.evaluation.result import StageResult
from robustctl.threat_models.context import ThreatContext, detect


def cw_wb_attack(
    wb: CwWbConfig, model: torch.nn.Module, detector: Any, clean_scores: Tensor | None = None
) -> CWWhiteBox:
    """C&W-wb with the ``threat_model.whitebox`` config ``wb``; the ``detector`` threshold variant
    uses the clean scores' (1 - fpr) quantile as one global T, ``per_example`` each image's own
    clean score."""
    thresholds = float(threshold_at(clean_scores, wb.fpr)) if wb.threshold == "detector" else None
    return CWWhiteBox(model, detector, wb, thresholds=thresholds)


def budget_note(metrics: dict[str, float], wb: Any) -> str | None:
    """Why the white-box goal (every example succeeds, AUC <= 0.5) was not reached, if it was
    not."""
    rate = metrics[keys.whitebox(keys.SUCCESS_RATE)]
    auc = metrics.get(keys.whitebox(keys.AUC))
    if rate >= 1.0 and auc is not None and auc <= 0.5:
        return None
    return (
        f"budget exhausted ({wb.binary_steps} binary steps x {wb.steps} iterations): "
        f"success rate {rate:.3f}, "
        f"AUC {'n/a' if auc is None else f'{auc:.3f}'}; raise threat_model.whitebox.steps"
    )


def run(ctx: ThreatContext) -> StageResult:
    detector = require_detector(ctx.detector, "threat_model stage whitebox")
    wb = ctx.cfg.threat_model.whitebox
    attack = cw_wb_attack(wb, ctx.model, detector, ctx.clean_scores)
    outcome = run_attack(
        attack,
        ctx.x,
        ctx.y,
        ctx.cfg.threat_model.batch_size,
        None,
        ctx.clean_pred,
        stage=keys.WHITEBOX,
    )
    _, result = detect(ctx, outcome.x_adv)
    out = StageResult(
        metrics={
            **outcome.metrics,
            **result.metrics(keys.attack_prefix(keys.WHITEBOX, keys.CW_WB)),
            keys.whitebox(keys.SECONDS): outcome.seconds,
        },
        tags={keys.WHITEBOX_THRESHOLD_TAG: wb.threshold},
    )
    note = budget_note(out.metrics, wb) if result.auc is not None else result.reason
    if note:
        out.notes[keys.attack_prefix(keys.WHITEBOX, keys.CW_WB)] = note
        out.tags[keys.note_tag(keys.WHITEBOX, keys.CW_WB)] = note
        console.print(f"[yellow]white-box:[/] {note}")
    return out
