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
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import Tensor

from robustctl import metric_keys as keys
from robustctl.console import console
from robustctl.data.base import ImageData, seeded_permutation
from robustctl.defenses import require_detector
from robustctl.evaluation.attack_runner import AttackOutcome, run_attack
from robustctl.evaluation.intervals import bootstrap_interval, breach_median
from robustctl.evaluation.result import StageResult
from robustctl.inference import ModelOutputs
from robustctl.threat_models.context import (
    ThreatContext,
    detect,
    split_scores,
    validation_threshold,
)
from robustctl.threat_models.convergence import Convergence, converge
from robustctl.threat_models.cw_wb import CwWbConfig, CWWhiteBox, StartingPool
from robustctl.threat_models.detector_aware import DetectorAwareAttack
from robustctl.threat_models.fmn_wb import FMNWhiteBox, fmn_wb_config
from robustctl.threat_models.stage import Column, Rows, Stage, register


@dataclass
class AttackSetup:
    """What every white-box attack of a run shares, computed once: the starting pool
    (``start=other_class``) and the global threshold (``threshold=detector``; None for
    ``per_example``)."""

    pool: StartingPool | None
    thresholds: float | None


def attack_setup(
    wb: CwWbConfig,
    model: torch.nn.Module,
    detector: Any,
    data: ImageData,
    batch_size: int = 512,
    outputs: ModelOutputs | None = None,
) -> AttackSetup:
    """``per_example`` compares each image with its own clean score; ``detector`` uses one
    global T, the threshold at false-positive rate ``wb.fpr`` of ``model`` + ``detector``'s
    scores of the clean *validation* images (``outputs``: ``model``'s outputs, if already
    computed)."""
    outputs = outputs or ModelOutputs(model, data, batch_size)
    pool = starting_pool(wb, model, detector, data, batch_size, outputs)
    if wb.threshold != "detector":
        return AttackSetup(pool, None)
    threshold = validation_threshold(
        detector,
        model,
        data,
        outputs,
        wb.fpr,
        batch_size,
        "threat_model.whitebox.threshold=detector",
        "set dataset.val_fraction > 0, or threat_model.whitebox.threshold=per_example",
    )
    return AttackSetup(pool, threshold)


def cw_wb_attack(
    wb: CwWbConfig,
    model: torch.nn.Module,
    detector: Any,
    data: ImageData,
    batch_size: int = 512,
    outputs: ModelOutputs | None = None,
) -> CWWhiteBox:
    """C&W-wb with the ``threat_model.whitebox`` config ``wb`` (:func:`attack_setup`)."""
    setup = attack_setup(wb, model, detector, data, batch_size, outputs)
    return CWWhiteBox(model, detector, wb, thresholds=setup.thresholds, pool=setup.pool)


def whitebox_attack(
    name: str, tm: Any, model: torch.nn.Module, detector: Any, setup: AttackSetup, budget: int
) -> DetectorAwareAttack:
    """White-box attack ``name`` (``cw_wb`` or ``fmn_wb``) of the ``threat_model`` config
    ``tm`` with ``budget`` times its iterations; both take the detector-aware fields of
    ``threat_model.whitebox``."""
    wb = tm.whitebox
    if name == keys.CW_WB:
        config: Any = dataclasses.replace(wb, steps=wb.steps * budget)
        return CWWhiteBox(model, detector, config, thresholds=setup.thresholds, pool=setup.pool)
    config = fmn_wb_config(tm.fmn_wb, wb, steps=tm.fmn_wb.steps * budget)
    return FMNWhiteBox(model, detector, config, thresholds=setup.thresholds, pool=setup.pool)


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


def finite(value: float) -> float:
    """``value``, or NaN for an infinite one (MLflow stores no infinity)."""
    return float(value) if math.isfinite(value) else math.nan


def budget_metrics(
    distortions: np.ndarray, seed: int = 0, attack: str = keys.CW_WB
) -> dict[str, float]:
    """``median_distortion`` (NaN when fewer than half are breached) and its bootstrap interval
    (an infinite bound is logged as NaN)."""
    key = keys.attack_key(keys.WHITEBOX, attack, keys.MEDIAN_DISTORTION)
    if distortions.size == 0:
        return {key: math.nan}
    low, high = bootstrap_interval(distortions, breach_median, seed=seed)
    return {
        key: finite(breach_median(distortions)),
        keys.ci_low(key): finite(low),
        keys.ci_high(key): finite(high),
    }


def _figure(size: tuple[float, float] = (5, 3.5)) -> Any:
    """A matplotlib Figure on its own Agg canvas, never registered with pyplot, so nothing stays
    open however the stage's result is used (logged and dropped, or only inspected)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    return fig


def budget_curve_figure(curves: dict[str, np.ndarray], title: str) -> Any:
    """Success rate over the clean-correct examples as a function of the L2 budget, one step
    curve per attack (``curves``: attack -> per-example minimal breach distortions)."""
    fig = _figure()
    ax = fig.add_subplot()
    for attack, distortions in curves.items():
        breached = np.sort(distortions[np.isfinite(distortions)])
        n = max(distortions.size, 1)
        if breached.size:
            steps = np.concatenate([[0.0], breached])
            ax.step(steps, np.arange(breached.size + 1) / n, where="post", label=attack)
    ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("L2 budget (L2 / sqrt(n))")
    ax.set_ylabel("success rate (clean-correct)")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    if len(curves) > 1:
        ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def convergence_figure(ladders: dict[str, Convergence], title: str) -> Any:
    """Success (left) and median breach distortion (right) against the attack passes spent
    per attacked example, one line per attack, a filled marker where the attack converged."""
    fig = _figure((8, 3.2))
    left, right = fig.subplots(1, 2)
    for attack, ladder in ladders.items():
        n = max(ladder.outcome.labels.numel(), 1)
        passes = [level.passes / n for level in ladder.levels]
        success = [level.success for level in ladder.levels]
        errors = [level.standard_error for level in ladder.levels]
        medians = [finite(level.median) for level in ladder.levels]
        marker = "o" if ladder.converged else "x"
        left.errorbar(passes, success, yerr=errors, marker=marker, label=attack, capsize=2)
        right.plot(passes, medians, marker=marker, label=attack)
    for ax, label in ((left, "success rate"), (right, "median breach distortion")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("attack passes per example")
        ax.set_ylabel(label)
    left.legend(loc="lower right")
    fig.suptitle(title)
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
    attack's (robustctl.evaluation.sanity: more iterations must not succeed less often). Only
    when the convergence ladder is off: otherwise its second rung is this check, on every
    attacked image (:func:`ladder_check`)."""
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


def ladder_check(ladder: Convergence) -> dict[str, float]:
    """The sanity check's two success rates from C&W-wb's ladder: the configured budget's run
    and the run with twice its iterations, each on its own (not combined), over every
    clean-correct attacked example."""
    first, second = ladder.levels[0], ladder.levels[1]
    return {
        keys.whitebox(keys.CHECK_SUCCESS_RATE): first.own_success,
        keys.whitebox(keys.MORE_ITERATIONS_SUCCESS_RATE): second.own_success,
    }


def convergence_metrics(attack: str, ladder: Convergence, attacked: int) -> dict[str, float]:
    """``converged`` (1/0), ``budget_factor`` and ``passes_per_example`` of one attack."""
    key = partial(keys.attack_key, keys.WHITEBOX, attack)
    return {
        key(keys.CONVERGED): float(ladder.converged),
        key(keys.BUDGET_FACTOR): float(ladder.budget),
        key(keys.PASSES_PER_EXAMPLE): ladder.passes / max(attacked, 1),
    }


def comparison_metrics(fmn: np.ndarray, cw: np.ndarray) -> dict[str, float]:
    """FMN-wb against C&W-wb, per clean-correct example breached by both: the median ratio of
    their breach distortions (FMN / C&W) and the share where FMN's is the smaller."""
    both = np.isfinite(fmn) & np.isfinite(cw) & (cw > 0)
    key = partial(keys.attack_key, keys.WHITEBOX, keys.FMN_WB)
    if not both.any():
        return {key(keys.RATIO_TO_CW_WB): math.nan, key(keys.BELOW_CW_WB_RATE): math.nan}
    return {
        key(keys.RATIO_TO_CW_WB): float(np.median(fmn[both] / cw[both])),
        key(keys.BELOW_CW_WB_RATE): float((fmn[both] < cw[both]).mean()),
    }


def measure(ctx: ThreatContext, detector: Any, attack: str, setup: AttackSetup) -> Convergence:
    """``attack``'s convergence ladder on the attacked images."""
    tm = ctx.cfg.threat_model

    def run_level(budget: int, incumbents: Tensor | None) -> tuple[AttackOutcome, int]:
        instance = whitebox_attack(attack, tm, ctx.model, detector, setup, budget)
        outcome = run_attack(
            instance,
            ctx.x,
            ctx.y,
            tm.batch_size,
            None,
            ctx.clean_pred,
            stage=keys.WHITEBOX,
            starts=incumbents,
        )
        return outcome, instance.passes

    cap = tm.convergence.cap(attack)
    console.print(f"{attack}: convergence ladder (at most {cap} doublings)")
    ladder = converge(run_level, ctx.x, tm.convergence, keys.WHITEBOX, console.print, cap)
    console.print(f"{attack}: {ladder.reason}")
    return ladder


def run(ctx: ThreatContext) -> StageResult:
    detector = require_detector(ctx.detector, "threat_model stage whitebox")
    tm = ctx.cfg.threat_model
    wb = tm.whitebox
    setup = attack_setup(
        wb, ctx.model, detector, ctx.data, ctx.cfg.evaluate.batch_size, ctx.outputs
    )
    out = StageResult(tags={keys.WHITEBOX_THRESHOLD_TAG: wb.threshold})
    ladders: dict[str, Convergence] = {}
    for attack in tm.whitebox_attacks:
        ladder = ladders[attack] = measure(ctx, detector, attack, setup)
        outcome, prefix = ladder.outcome, keys.attack_prefix(keys.WHITEBOX, attack)
        _, result = detect(ctx, outcome.x_adv)
        out.metrics.update(
            {
                **outcome.metrics,
                **result.metrics(prefix),
                **budget_metrics(ladder.distortions, tm.seed, attack),
                **convergence_metrics(attack, ladder, len(ctx.x)),
                keys.attack_key(keys.WHITEBOX, attack, keys.SECONDS): outcome.seconds,
            }
        )
        out.documents[keys.budget_curve(attack)] = {
            "distortions": [float(d) if math.isfinite(d) else None for d in ladder.distortions],
            "unit": "L2/sqrt(n)",
        }
        out.documents[keys.convergence_curve(attack)] = {
            "levels": [level.as_json() for level in ladder.levels],
            "converged": ladder.converged,
            "reason": ladder.reason,
            "distortion_tolerance": tm.convergence.distortion_tolerance,
            "unit": "budget: iterations factor; passes: example-iterations, cumulative",
        }
        out.tags[keys.convergence_tag(attack)] = ladder.reason
        notes = [] if ladder.converged else [ladder.reason]
        if attack == keys.CW_WB:
            note = budget_note(out.metrics, wb) if result.auc is not None else result.reason
            notes = [n for n in (note, *notes) if n]
        if notes:
            text = "; ".join(notes)
            out.notes[prefix] = text
            out.tags[keys.note_tag(keys.WHITEBOX, attack)] = text
            console.print(f"[yellow]white-box {attack}:[/] {text}")
    if keys.CW_WB in ladders and len(ladders[keys.CW_WB].levels) > 1:
        out.metrics.update(ladder_check(ladders[keys.CW_WB]))
    elif keys.CW_WB in ladders:
        out.metrics.update(iteration_check(ctx, detector, ladders[keys.CW_WB].outcome, wb))
    if keys.CW_WB in ladders and keys.FMN_WB in ladders:
        out.metrics.update(
            comparison_metrics(ladders[keys.FMN_WB].distortions, ladders[keys.CW_WB].distortions)
        )
    title = f"through {ctx.cfg.defense.name}"
    out.figures["plots/whitebox/success_vs_budget.png"] = budget_curve_figure(
        {a: ladder.distortions for a, ladder in ladders.items()}, f"success vs L2 budget {title}"
    )
    out.figures["plots/whitebox/convergence.png"] = convergence_figure(
        ladders, f"white-box convergence {title}"
    )
    return out


STAGE = register(
    Stage(
        name=keys.WHITEBOX,
        run=run,
        needs_detector=True,
        settings="whitebox",
        title="White-box attacks through model + detector (Table 3)",
        summary=Rows(
            "attack",
            (
                Column("success", keys.SUCCESS_RATE),
                Column("distortion", "distortion"),
                Column("median breach", keys.MEDIAN_DISTORTION),
                Column("converged", keys.CONVERGED, count=True),
                Column("budget x", keys.BUDGET_FACTOR, count=True),
            ),
        ),
        description=Rows(
            "white-box",
            (
                Column("success rate", keys.SUCCESS_RATE),
                Column("mean distortion", "distortion"),
                Column("median breach", keys.MEDIAN_DISTORTION),
                Column("converged", keys.CONVERGED, count=True),
            ),
        ),
    )
)
