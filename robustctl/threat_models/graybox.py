"""Gray-box threat model (PDM Appendix D): the attacker knows the classifier, not the detector.

Runs the configured attacks (``attack=X`` alone when set, else ``threat_model.attacks`` with
``threat_model.attack_params``) on the attacked subset, then scores every adversarial batch with
the detector: success rate and distortions per attack (:mod:`robustctl.evaluation.attack_runner`),
the detection AUC over (clean-correct, attack-succeeded) pairs with its pair count
(:mod:`robustctl.evaluation.detection`), the resiliency curves (accuracy under FGSM/BIM per eps,
PDM Figure 3) and the gradient norms along BIM's path (PDM section 4.2). Figures: ROC curves,
origin-vs-adversarial confusion matrices, example grids, resiliency curves. Per attack, the
noise baseline: how often Gaussian noise of the attack's per-image L2 norm fools the classifier
(``graybox/<attack>/noise_success_rate``; the attack must beat it:
:mod:`robustctl.evaluation.sanity`).
"""

from __future__ import annotations

from typing import Any

from robustctl import metric_keys as keys
from robustctl.attacks import build
from robustctl.console import console
from robustctl.evaluation.attack_runner import run_attack_suite
from robustctl.evaluation.detection import roc_figure
from robustctl.evaluation.figures import example_grid_figure
from robustctl.evaluation.gradient_path import bim_gradient_norms
from robustctl.evaluation.resiliency import resiliency_curve, resiliency_figure
from robustctl.evaluation.result import StageResult
from robustctl.evaluation.sanity import noise_baseline
from robustctl.threat_models.context import ThreatContext, detect
from robustctl.threat_models.stage import Column, Rows, Stage, register

# the BIM-path diagnostic's budget (PDM section 4.2: BIM, eps 0.1, 10 iterations)
BIM_PATH_EPS, BIM_PATH_STEPS = 0.1, 10


def attack_specs(ctx: ThreatContext) -> list[Any]:
    """``attack=X`` alone when it is set, else every attack of ``threat_model.attacks``."""
    cfg, tm = ctx.cfg, ctx.cfg.threat_model
    if cfg.attack.name != "none":
        return [cfg.attack]
    return [build(name, ctx.model, **dict(tm.attack_params.get(name, {}))) for name in tm.attacks]


def run(ctx: ThreatContext) -> StageResult:
    cfg, tm = ctx.cfg, ctx.cfg.threat_model
    out = StageResult()
    outcomes = run_attack_suite(
        ctx.model, ctx.x, ctx.y, attack_specs(ctx), batch_size=tm.batch_size
    )
    detections = {}
    for name, outcome in outcomes.items():
        out.metrics.update(outcome.metrics)
        out.metrics[keys.graybox(name, keys.SECONDS)] = outcome.seconds
        out.metrics.update(
            noise_baseline(
                ctx.model,
                ctx.x,
                outcome.x_adv,
                ctx.y,
                outcome.clean_pred,
                keys.graybox(name, keys.NOISE_SUCCESS_RATE),
                tm.batch_size,
                tm.seed,
            )
        )
        console.print(f"  {name}: {outcome.seconds:.1f}s")
        if ctx.detector is not None:
            _, result = detect(ctx, outcome.x_adv)
            detections[name] = result
            out.metrics.update(result.metrics(keys.attack_prefix(keys.GRAYBOX, name)))
            if result.auc is None:
                out.notes[keys.graybox(name, keys.AUC)] = result.reason
                out.tags[keys.auc_reason_tag(keys.GRAYBOX, name)] = result.reason
        out.figures[f"plots/graybox/{name}_confusion.png"] = outcome.confusion_figure(
            ctx.data.class_names
        )
        mask = outcome.adversarial
        if mask.any():
            out.figures[f"plots/graybox/{name}_examples.png"] = example_grid_figure(
                ctx.x[mask][:8],
                outcome.x_adv[mask][:8],
                ctx.y[mask][:8],
                outcome.adv_pred[mask][:8],
            )
    if detections:
        out.figures["plots/graybox/roc.png"] = roc_figure(
            detections, title=f"gray-box detection ({cfg.defense.name})"
        )
    resiliency: dict[str, float] = {}
    for attack in tm.resiliency_attacks:
        resiliency.update(
            resiliency_curve(
                ctx.model, ctx.x, ctx.y, attack, tm.resiliency_eps, batch_size=tm.batch_size
            )
        )
    out.metrics.update(resiliency)
    if tm.resiliency_attacks:
        out.figures["plots/resiliency.png"] = resiliency_figure(
            resiliency, title=f"{ctx.data.name}: accuracy under attack"
        )
    out.step_metrics.update(
        bim_gradient_norms(
            ctx.model,
            ctx.x,
            ctx.y,
            eps=BIM_PATH_EPS,
            steps=BIM_PATH_STEPS,
            batch_size=tm.batch_size,
        )
    )
    return out


STAGE = register(
    Stage(
        name=keys.GRAYBOX,
        run=run,
        needs_detector=False,
        title="Gray-box attacks (Table 2)",
        summary=Rows(
            "attack",
            (
                Column("success", keys.SUCCESS_RATE),
                Column("distortion", "distortion"),
                Column("Linf", "linf"),
            ),
        ),
        description=Rows(
            "gray-box attack",
            (Column("success rate", keys.SUCCESS_RATE), Column("mean distortion", "distortion")),
        ),
    )
)
