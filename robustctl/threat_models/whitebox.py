"""White-box threat model (PDM Appendix D; Carlini & Wagner 2017, "Adversarial examples are not
easily detected"): the attacker knows the classifier *and* the detector, and runs C&W-wb through
both (:class:`robustctl.threat_models.cw_wb.CWWhiteBox`, parameters ``threat_model.whitebox``).

Logged (PDM Table 3): ``whitebox/cw_wb/{success_rate,distortion,l2,linf,l0}`` (success over the
clean-correct examples of the attacked subset, distortions over the successful ones), the
detection AUC of the target's detector over the (clean, adversarial) pairs with its pair count,
and a note when the budget ran out before the attack's goal (every example succeeds and AUC <= 0.5).

The mean distortion over successes is biased low when not every example is breached (the easy
ones succeed first), so the stage also logs the whole success-vs-budget curve: each clean-correct
example's minimal successful distortion (C&W keeps the smallest it found; infinite when it never
succeeded) as the artifact ``whitebox/cw_wb_budget_curve.json`` with its plot, and
``whitebox/cw_wb/median_distortion``: the budget at which half of the clean-correct examples are
breached (infinite, logged as NaN with a note, when fewer than half are), with a bootstrap interval.

Sanity check (:mod:`robustctl.evaluation.sanity`): C&W-wb is rerun with twice the iterations on
``threat_model.sanity_samples`` attacked images; both success rates there are logged
(``whitebox/cw_wb/check_success_rate``, ``whitebox/cw_wb/more_iterations_success_rate``).

``threshold=detector`` takes its global threshold from the *validation* split's clean scores, never
from the attacked test images.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from robustctl import metric_keys as keys
from robustctl.attacks.metrics import per_example_distortions
from robustctl.console import console
from robustctl.data.base import ImageData, seeded_permutation
from robustctl.defenses import require_detector, threshold_at
from robustctl.errors import ConfigError
from robustctl.evaluation.attack_runner import AttackOutcome, run_attack
from robustctl.evaluation.intervals import bootstrap_interval, breach_median
from robustctl.evaluation.result import StageResult
from robustctl.inference import ModelOutputs
from robustctl.threat_models.context import ThreatContext, detect, split_scores
from robustctl.threat_models.cw_wb import CwWbConfig, CWWhiteBox, StartingPool
from robustctl.threat_models.stage import Column, Rows, Stage, register


def cw_wb_attack(
    wb: CwWbConfig,
    model: torch.nn.Module,
    detector: Any,
    data: ImageData,
    batch_size: int = 512,
    outputs: ModelOutputs | None = None,
) -> CWWhiteBox:
    """C&W-wb with the ``threat_model.whitebox`` config ``wb``: ``per_example`` compares each
    image with its own clean score; ``detector`` uses one global T, the threshold at false-positive
    rate ``wb.fpr`` of ``model`` + ``detector``'s scores of the clean *validation* images
    (``outputs``: ``model``'s outputs, if already computed)."""
    outputs = outputs or ModelOutputs(model, data, batch_size)
    pool = starting_pool(wb, model, detector, data, batch_size, outputs)
    if wb.threshold != "detector":
        return CWWhiteBox(model, detector, wb, pool=pool)
    if not len(data.y_val):
        raise ConfigError(
            "threat_model.whitebox.threshold=detector sets its threshold on the validation split, "
            "but it is empty",
            hint="set dataset.val_fraction > 0, or threat_model.whitebox.threshold=per_example",
        )
    val_scores = split_scores(detector, model, data.x_val, outputs.split("val"), batch_size)
    threshold = float(threshold_at(val_scores, wb.fpr))
    return CWWhiteBox(model, detector, wb, thresholds=threshold, pool=pool)


def starting_pool(
    wb: CwWbConfig,
    model: torch.nn.Module,
    detector: Any,
    data: ImageData,
    batch_size: int,
    outputs: ModelOutputs,
) -> StartingPool | None:
    """For ``start=other_class``: ``wb.start_pool`` training images (a seeded subset; the
    white-box attacker knows the training data), with the model's predictions and the
    detector's scores of them; None for ``start=clean``. Never test images, and never the
    training images the detector holds as reference points
    (:meth:`~robustctl.defenses.base.Detector.held_training_rows`): the seeded order without
    them, so the pool still has ``wb.start_pool`` images when that many remain."""
    if wb.start != "other_class":
        return None
    order = seeded_permutation(len(data.y_train), wb.seed or 0)
    held = detector.held_training_rows().cpu()
    idx = order[~torch.isin(order, held)][: wb.start_pool]
    known = outputs.split("train").subset(idx)
    scores = split_scores(detector, model, data.x_train[idx], known, batch_size)
    return StartingPool(data.x_train[idx], known.predictions, scores)


def minimal_distortions(outcome: AttackOutcome, x: Tensor) -> np.ndarray:
    """Per clean-correct example: the distortion L2/sqrt(n) of its adversarial example when the
    attack breached it (adv_pred != y), else inf."""
    distortion = per_example_distortions(x, outcome.x_adv)["distortion"].numpy()
    breached = outcome.adversarial.numpy()
    correct = (outcome.clean_pred == outcome.labels).numpy()
    return np.where(breached, distortion, np.inf)[correct]


def finite(value: float) -> float:
    """``value``, or NaN for an infinite one (MLflow stores no infinity)."""
    return float(value) if math.isfinite(value) else math.nan


def budget_metrics(distortions: np.ndarray, seed: int = 0) -> dict[str, float]:
    """``median_distortion`` (NaN when fewer than half are breached) and its bootstrap interval
    (an infinite bound is logged as NaN)."""
    key = keys.whitebox(keys.MEDIAN_DISTORTION)
    if distortions.size == 0:
        return {key: math.nan}
    low, high = bootstrap_interval(distortions, breach_median, seed=seed)
    return {
        key: finite(breach_median(distortions)),
        keys.ci_low(key): finite(low),
        keys.ci_high(key): finite(high),
    }


def budget_curve_figure(distortions: np.ndarray, title: str) -> Any:
    """Success rate over the clean-correct examples as a function of the L2 budget: a matplotlib
    Figure on its own Agg canvas, never registered with pyplot, so nothing stays open however
    the stage's result is used (logged and dropped, or only inspected)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    breached = np.sort(distortions[np.isfinite(distortions)])
    n = max(distortions.size, 1)
    if breached.size:
        steps = np.concatenate([[0.0], breached])
        ax.step(steps, np.arange(breached.size + 1) / n, where="post")
    ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("L2 budget (L2 / sqrt(n))")
    ax.set_ylabel("success rate (clean-correct)")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def budget_note(metrics: dict[str, float], wb: Any) -> str | None:
    """Why the white-box goal (every example succeeds, AUC <= 0.5) was not reached, if it was
    not: at 100% success with AUC > 0.5 the detector was "not breached at this budget"; below
    100% the budget ran out."""
    rate = metrics[keys.whitebox(keys.SUCCESS_RATE)]
    auc = metrics.get(keys.whitebox(keys.AUC))
    if rate >= 1.0 and auc is not None and auc <= 0.5:
        return None
    budget = f"{wb.binary_steps} binary steps x {wb.steps} iterations"
    shown = f"success rate {rate:.3f}, AUC {'n/a' if auc is None else f'{auc:.3f}'}"
    if rate >= 1.0:
        return f"not breached at this budget ({budget}): {shown}"
    return f"budget exhausted ({budget}): {shown}; raise threat_model.whitebox.steps"


def iteration_check(
    ctx: ThreatContext, detector: Any, outcome: AttackOutcome, wb: CwWbConfig
) -> dict[str, float]:
    """C&W-wb rerun with twice the iterations per binary step on the first
    ``threat_model.sanity_samples`` attacked images: its success rate there beside the configured
    attack's (robustctl.evaluation.sanity: more iterations must not succeed less often)."""
    n = min(ctx.cfg.threat_model.sanity_samples, len(ctx.x))
    if n == 0:
        return {}
    longer = dataclasses.replace(wb, steps=2 * wb.steps)
    attack = cw_wb_attack(
        longer, ctx.model, detector, ctx.data, ctx.cfg.evaluate.batch_size, ctx.outputs
    )
    console.print(f"  sanity: C&W-wb with {longer.steps} iterations on {n} images")
    again = attack(ctx.x[:n], ctx.y[:n])
    return {
        keys.whitebox(keys.CHECK_SUCCESS_RATE): float(outcome.success[:n].float().mean()),
        keys.whitebox(keys.MORE_ITERATIONS_SUCCESS_RATE): float(again.success.float().mean()),
    }


def run(ctx: ThreatContext) -> StageResult:
    detector = require_detector(ctx.detector, "threat_model stage whitebox")
    wb = ctx.cfg.threat_model.whitebox
    attack = cw_wb_attack(
        wb, ctx.model, detector, ctx.data, ctx.cfg.evaluate.batch_size, ctx.outputs
    )
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
    distortions = minimal_distortions(outcome, ctx.x)
    out = StageResult(
        metrics={
            **outcome.metrics,
            **result.metrics(keys.attack_prefix(keys.WHITEBOX, keys.CW_WB)),
            **budget_metrics(distortions, ctx.cfg.threat_model.seed),
            keys.whitebox(keys.SECONDS): outcome.seconds,
            **iteration_check(ctx, detector, outcome, wb),
        },
        tags={keys.WHITEBOX_THRESHOLD_TAG: wb.threshold},
        figures={
            "plots/whitebox/success_vs_budget.png": budget_curve_figure(
                distortions, f"C&W-wb through {ctx.cfg.defense.name}: success vs L2 budget"
            )
        },
        documents={
            keys.WHITEBOX_BUDGET_CURVE: {
                "distortions": [float(d) if math.isfinite(d) else None for d in distortions],
                "unit": "L2/sqrt(n)",
            }
        },
    )
    note = budget_note(out.metrics, wb) if result.auc is not None else result.reason
    if note:
        out.notes[keys.attack_prefix(keys.WHITEBOX, keys.CW_WB)] = note
        out.tags[keys.note_tag(keys.WHITEBOX, keys.CW_WB)] = note
        console.print(f"[yellow]white-box:[/] {note}")
    return out


STAGE = register(
    Stage(
        name=keys.WHITEBOX,
        run=run,
        needs_detector=True,
        settings="whitebox",
        title="White-box C&W-wb (Table 3)",
        summary=Rows(
            "attack",
            (
                Column("success", keys.SUCCESS_RATE),
                Column("distortion", "distortion"),
                Column("median breach", keys.MEDIAN_DISTORTION),
            ),
        ),
        description=Rows(
            "white-box",
            (Column("success rate", keys.SUCCESS_RATE), Column("mean distortion", "distortion")),
            label="C&W-wb (model + detector)",
            attacks=(keys.CW_WB,),
        ),
    )
)
