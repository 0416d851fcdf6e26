"""Threat-model stages (PDM Appendix D, SPEC section 8): what each adversary knows, and what is logged.

:func:`prepare` builds the shared :class:`ThreatContext`: a seeded subset of ``threat_model.num_samples``
test images, their clean predictions and embeddings, and the fitted detector (``defense``), whose
bandwidth is selected on the validation split (held-out clean training data). Each stage in
:data:`STAGES` then takes the context and the tracker and returns its metrics; figures and
non-numeric outcomes (e.g. why an AUC is missing) go to the tracker as artifacts and tags.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from robustctl.config.schema import RunConfig
from robustctl.console import console
from robustctl.data.base import ImageData, seeded_permutation
from robustctl.evaluation.predict import predict


@dataclass
class ThreatContext:
    cfg: RunConfig
    model: torch.nn.Module
    data: ImageData
    x: Tensor                 # attacked test images (seeded subset)
    y: Tensor
    clean_pred: Tensor
    clean_emb: Tensor
    detector: Any | None      # fitted KDEDetector, or None for defense=none
    clean_scores: Tensor | None
    notes: dict[str, str] = field(default_factory=dict)


def attack_subset(data: ImageData, n: int, seed: int) -> tuple[Tensor, Tensor]:
    """``n`` test images chosen by a seeded permutation (all of them when n is 0 or too large)."""
    if n == 0 or n >= len(data.y_test):
        return data.x_test, data.y_test
    idx = seeded_permutation(len(data.y_test), seed)[:n]
    return data.x_test[idx], data.y_test[idx]


def fit_detector(cfg: RunConfig, model: torch.nn.Module, data: ImageData) -> Any | None:
    """The ``defense`` detector fitted on training embeddings, bandwidth chosen on the validation split."""
    from robustctl.defenses import build_detector

    if cfg.defense.name == "none":
        return None
    batch = cfg.evaluate.batch_size
    _, train_emb = predict(model, data.x_train, batch)
    held_out = None
    if len(data.y_val):
        held_out = (predict(model, data.x_val, batch)[1], data.y_val)
    return build_detector(cfg.defense, train_emb, data.y_train, held_out=held_out)


def prepare(cfg: RunConfig, model: torch.nn.Module, data: ImageData, detector: Any | None = None) -> ThreatContext:
    tm = cfg.threat_model
    x, y = attack_subset(data, tm.num_samples, tm.seed)
    logits, emb = predict(model, x, cfg.evaluate.batch_size)
    clean_pred = logits.argmax(1)
    scores = detector.score(emb, clean_pred).detach().cpu() if detector is not None else None
    return ThreatContext(cfg, model, data, x, y, clean_pred, emb, detector, scores)


def detector_scores(ctx: ThreatContext, model: torch.nn.Module, x_adv: Tensor) -> tuple[Tensor, Tensor]:
    """(predictions, detector scores) of ``model`` + ``ctx.detector`` on a batch of images."""
    logits, emb = predict(model, x_adv, ctx.cfg.evaluate.batch_size)
    pred = logits.argmax(1)
    with torch.no_grad():
        scores = ctx.detector.score(emb, pred).detach().cpu()
    return pred, scores


# ---------------------------------------------------------------------------------------- gray-box
def graybox_stage(ctx: ThreatContext, tracker: Any) -> dict[str, float]:
    """Run the configured attacks (``attack=X`` alone when set, else ``threat_model.attacks``),
    log success rate and distortions, score them with the detector (AUC with pair counts), and
    draw ROC curves, adversarial confusion matrices, example grids and resiliency curves."""
    import matplotlib.pyplot as plt

    from robustctl.attacks import build
    from robustctl.evaluation.detection import detection_auc, roc_figure
    from robustctl.evaluation.graybox import (
        bim_gradient_norms,
        example_grid_figure,
        resiliency_curve,
        resiliency_figure,
        run_attack_suite,
    )

    cfg, tm = ctx.cfg, ctx.cfg.threat_model
    specs: list[Any] = [cfg.attack] if cfg.attack.name != "none" else [
        build(name, ctx.model, **dict(tm.attack_params.get(name, {}))) for name in tm.attacks]
    outcomes = run_attack_suite(ctx.model, ctx.x, ctx.y, specs, batch_size=tm.batch_size)
    metrics: dict[str, float] = {}
    detections = {}
    for name, outcome in outcomes.items():
        metrics.update(outcome.metrics)
        metrics[f"graybox/{name}/seconds"] = outcome.seconds
        console.print(f"  {name}: {outcome.seconds:.1f}s")
        if ctx.detector is not None:
            adv_pred, adv_scores = detector_scores(ctx, ctx.model, outcome.x_adv)
            result = detection_auc(ctx.clean_scores, adv_scores, ctx.y, ctx.clean_pred, adv_pred, min_pairs=tm.min_pairs)
            detections[name] = result
            metrics.update(result.metrics(f"graybox/{name}"))
            if result.auc is None:
                ctx.notes[f"graybox/{name}/auc"] = result.reason
                tracker.set_tags({f"graybox/{name}/auc_reason": result.reason})
        fig = outcome.confusion_figure(ctx.data.class_names)
        tracker.log_figure(fig, f"plots/graybox/{name}_confusion.png")
        plt.close(fig)
        mask = outcome.adversarial
        if mask.any():
            fig = example_grid_figure(ctx.x[mask][:8], outcome.x_adv[mask][:8], ctx.y[mask][:8], outcome.adv_pred[mask][:8])
            tracker.log_figure(fig, f"plots/graybox/{name}_examples.png")
            plt.close(fig)
    if detections:
        fig = roc_figure(detections, title=f"gray-box detection ({cfg.defense.name})")
        tracker.log_figure(fig, "plots/graybox/roc.png")
        plt.close(fig)
    for attack in tm.resiliency_attacks:
        metrics.update(resiliency_curve(ctx.model, ctx.x, ctx.y, attack, tm.resiliency_eps, batch_size=tm.batch_size))
    if tm.resiliency_attacks:
        fig = resiliency_figure({k: v for k, v in metrics.items() if k.startswith("resiliency/")},
                                title=f"{ctx.data.name}: accuracy under attack")
        tracker.log_figure(fig, "plots/resiliency.png")
        plt.close(fig)
    _log_bim_gradients(ctx, tracker, bim_gradient_norms)
    return metrics


def _log_bim_gradients(ctx: ThreatContext, tracker: Any, bim_gradient_norms: Callable[..., Any]) -> None:
    """PDM section 4.2 diagnostic: mean gradient norms after each BIM step, as step metrics."""
    norms = bim_gradient_norms(ctx.model, ctx.x, ctx.y, eps=0.1, steps=10, batch_size=ctx.cfg.threat_model.batch_size)
    for key, values in norms.items():
        for step, value in enumerate(values):
            tracker.log_metrics({key: float(value)}, step=step)


# --------------------------------------------------------------------------------------- white-box
def cw_wb_attack(cfg: RunConfig, model: torch.nn.Module, detector: Any, clean_scores: Tensor | None = None) -> Any:
    """``cw_wb`` from ``threat_model.whitebox``; the ``detector`` threshold variant uses the clean
    scores' (1 - fpr) quantile as one global T, ``per_example`` each image's own clean score."""
    from robustctl.attacks.cw_wb import CWWhiteBox
    from robustctl.defenses.kde import threshold_at

    wb = cfg.threat_model.whitebox
    thresholds = None
    if wb.threshold == "detector":
        thresholds = float(threshold_at(clean_scores, wb.fpr))
    return CWWhiteBox(model, detector, thresholds=thresholds, density_weight=wb.density_weight,
                      binary_steps=wb.binary_steps, steps=wb.steps, lr=wb.lr, c_init=wb.initial_const,
                      confidence=wb.confidence)


def _require_detector(ctx: ThreatContext, stage: str) -> None:
    from robustctl.errors import ConfigError

    if ctx.detector is None:
        raise ConfigError(f"threat_model stage {stage} attacks a detector, but defense=none", hint="add defense=kde")


def _budget_note(prefix: str, metrics: dict[str, float], wb: Any) -> str | None:
    """Why the white-box goal (every example succeeds, AUC <= 0.5) was not reached, if it was not."""
    rate, auc = metrics.get(f"{prefix}/success_rate", float("nan")), metrics.get(f"{prefix}/auc")
    if rate >= 1.0 and auc is not None and auc <= 0.5:
        return None
    return (f"budget exhausted ({wb.binary_steps} binary steps x {wb.steps} iterations): success rate {rate:.3f}, "
            f"AUC {'n/a' if auc is None else f'{auc:.3f}'}; raise threat_model.whitebox.steps")


def whitebox_stage(ctx: ThreatContext, tracker: Any) -> dict[str, float]:
    """C&W-wb through model + detector; mean minimal distortion, success rate and AUC (Table 3)."""
    from robustctl.evaluation.detection import detection_auc
    from robustctl.evaluation.graybox import run_attack

    _require_detector(ctx, "whitebox")
    tm = ctx.cfg.threat_model
    attack = cw_wb_attack(ctx.cfg, ctx.model, ctx.detector, ctx.clean_scores)
    outcome = run_attack(attack, ctx.x, ctx.y, tm.batch_size, None, ctx.clean_pred)
    prefix = "whitebox/cw_wb"
    metrics = {k.replace("graybox/cw_wb", prefix): v for k, v in outcome.metrics.items()}
    adv_pred, adv_scores = detector_scores(ctx, ctx.model, outcome.x_adv)
    result = detection_auc(ctx.clean_scores, adv_scores, ctx.y, ctx.clean_pred, adv_pred, min_pairs=tm.min_pairs)
    metrics.update(result.metrics(prefix))
    metrics[f"{prefix}/seconds"] = outcome.seconds
    tracker.set_tags({f"{prefix}/threshold": tm.whitebox.threshold})
    note = _budget_note(prefix, metrics, tm.whitebox) if result.auc is not None else result.reason
    if note:
        ctx.notes[prefix] = note
        tracker.set_tags({f"{prefix}/note": note})
        console.print(f"[yellow]white-box:[/] {note}")
    return metrics


# --------------------------------------------------------------------------------------- black-box
def blackbox_stage(ctx: ThreatContext, tracker: Any) -> dict[str, float]:
    """Distil a proxy, fit the attacker's own KDE on it, run C&W-wb on proxy + KDE, transfer (Table 4)."""
    from robustctl.config.schema import ModelConfig
    from robustctl.evaluation.detection import detection_auc
    from robustctl.evaluation.graybox import run_attack
    from robustctl.training.distill import distill

    _require_detector(ctx, "blackbox")
    cfg, bb = ctx.cfg, ctx.cfg.threat_model.blackbox
    depth = int(bb.proxy_model.removeprefix("resnet"))
    device = next(ctx.model.parameters()).device
    proxy = distill(ctx.model, ctx.data, ModelConfig(name=bb.proxy_model, depth=depth, width=cfg.model.width,
                                                    activation=cfg.model.activation,
                                                    negative_slope=cfg.model.negative_slope),
                    mode=bb.mode, temperature=bb.temperature, epochs=bb.epochs, batch_size=bb.batch_size,
                    lr=bb.lr, seed=ctx.cfg.threat_model.seed, device=device)
    proxy_detector = fit_detector(cfg, proxy.proxy, ctx.data)
    _, proxy_emb = predict(proxy.proxy, ctx.x, cfg.evaluate.batch_size)
    proxy_pred = predict(proxy.proxy, ctx.x, cfg.evaluate.batch_size)[0].argmax(1)
    proxy_scores = proxy_detector.score(proxy_emb, proxy_pred).detach().cpu()
    attack = cw_wb_attack(cfg, proxy.proxy, proxy_detector, proxy_scores)
    outcome = run_attack(attack, ctx.x, ctx.y, cfg.threat_model.batch_size, None, proxy_pred)
    adv_pred, adv_scores = detector_scores(ctx, ctx.model, outcome.x_adv)
    result = detection_auc(ctx.clean_scores, adv_scores, ctx.y, ctx.clean_pred, adv_pred,
                           min_pairs=cfg.threat_model.min_pairs)
    correct = ctx.clean_pred == ctx.y
    prefix = "blackbox/cw_wb"
    metrics = {
        "blackbox/proxy/agreement": proxy.agreement, "blackbox/proxy/accuracy": proxy.proxy_accuracy,
        f"{prefix}/proxy_success_rate": outcome.metrics.get("graybox/cw_wb/success_rate", float("nan")),
        f"{prefix}/transfer_rate": float((adv_pred[correct] != ctx.y[correct]).float().mean()) if correct.any() else float("nan"),
        f"{prefix}/distortion": outcome.metrics.get("graybox/cw_wb/distortion", float("nan")),
        f"{prefix}/seconds": outcome.seconds,
        **result.metrics(prefix),
    }
    if result.auc is None:
        ctx.notes[prefix] = result.reason
        tracker.set_tags({f"{prefix}/auc_reason": result.reason})
    return metrics


STAGES: dict[str, Callable[[ThreatContext, Any], dict[str, float]]] = {
    "graybox": graybox_stage,
    "whitebox": whitebox_stage,
    "blackbox": blackbox_stage,
}


def run_stages(ctx: ThreatContext, tracker: Any) -> dict[str, float]:
    metrics: dict[str, float] = {}
    if ctx.detector is not None:
        metrics.update(ctx.detector.metrics())
        tracker.log_metrics(metrics)
    for stage in ctx.cfg.threat_model.stages:
        console.rule(f"[bold]{stage}")
        started = time.perf_counter()
        stage_metrics = STAGES[stage](ctx, tracker)
        stage_metrics[f"time/{stage}_s"] = time.perf_counter() - started
        console.print(f"{stage}: {stage_metrics[f'time/{stage}_s']:.1f}s")
        tracker.log_metrics(stage_metrics)
        metrics.update(stage_metrics)
    return metrics
