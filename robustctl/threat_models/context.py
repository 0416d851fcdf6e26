"""What every threat-model stage shares: the attacked subset, its clean predictions and scores.

:func:`prepare` builds the :class:`ThreatContext`: a seeded subset of ``threat_model.num_samples``
test images, the target model's clean predictions on it, and the ``defense``
detector fitted on clean training embeddings (bandwidth chosen on the validation split) with its
scores of the clean subset. Every clean quantity comes from the evaluation's one pass over each
split (:class:`~robustctl.inference.ModelOutputs`, kept in the context). Stages read the context
and never change it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from robustctl.config.schema import RunConfig
from robustctl.data.base import ImageData, seeded_permutation
from robustctl.defenses import fit_detector, score_images, score_outputs, threshold_at
from robustctl.errors import ConfigError
from robustctl.evaluation.detection import DetectionResult, detection_auc
from robustctl.inference import ModelOutputs, SplitOutputs


@dataclass(frozen=True)
class ThreatContext:
    cfg: RunConfig
    model: torch.nn.Module
    data: ImageData
    x: Tensor  # attacked test images (seeded subset), CPU
    y: Tensor
    clean_pred: Tensor  # target model's predictions on x
    detector: Any | None  # fitted detector (defense), or None for defense=none
    clean_scores: Tensor | None
    outputs: ModelOutputs  # the target model's outputs on every split (one pass each)


def attack_subset(data: ImageData, n: int, seed: int) -> Tensor:
    """Indices of ``n`` test images chosen by a seeded permutation (all of them when n is 0 or too
    large)."""
    if n == 0 or n >= len(data.y_test):
        return torch.arange(len(data.y_test))
    return seeded_permutation(len(data.y_test), seed)[:n]


def prepare(
    cfg: RunConfig,
    model: torch.nn.Module,
    data: ImageData,
    detector: Any | None = None,
    outputs: ModelOutputs | None = None,
) -> ThreatContext:
    """The shared context; ``detector`` is fitted from ``cfg.defense`` unless given; ``outputs``
    are the evaluation's outputs of ``model`` (computed here when not given)."""
    batch = cfg.evaluate.batch_size
    outputs = outputs or ModelOutputs(model, data, batch)
    if detector is None:
        craft = crafter(model, cfg.threat_model.batch_size)
        detector = fit_detector(cfg.defense, model, data, batch, outputs, craft)
    tm = cfg.threat_model
    idx = attack_subset(data, tm.num_samples, tm.seed)
    clean = outputs.split("test").subset(idx)
    x, y = data.x_test[idx], data.y_test[idx]
    scores = None if detector is None else split_scores(detector, model, x, clean, batch)
    return ThreatContext(cfg, model, data, x, y, clean.predictions, detector, scores, outputs)


def crafter(model: torch.nn.Module, batch_size: int) -> Any:
    """``craft(attack, params, x, y)``: adversarial examples of ``x`` against ``model`` with the
    attack option ``attack`` and its ``params``, for detectors fitted on adversarial examples of
    training or validation images (:meth:`robustctl.defenses.FitInputs.adversarial_examples`)."""
    from robustctl.attacks import build
    from robustctl.evaluation.attack_runner import run_attack

    def craft(attack: str, params: dict[str, Any], x: Tensor, y: Tensor) -> Tensor:
        return run_attack(build(attack, model, **params), x, y, batch_size).x_adv

    return craft


def split_scores(
    detector: Any, model: torch.nn.Module, x: Tensor, outputs: SplitOutputs, batch_size: int
) -> Tensor:
    """The detector's scores (CPU) of images ``x`` whose outputs are known, under their
    predictions (:func:`robustctl.defenses.score_outputs`)."""
    return score_outputs(detector, model, x, outputs, batch_size)


def validation_threshold(
    detector: Any,
    model: torch.nn.Module,
    data: ImageData,
    outputs: ModelOutputs,
    fpr: float,
    batch_size: int,
    what: str,
    hint: str,
) -> float:
    """The detector's threshold at false-positive rate ``fpr`` on the clean *validation* images
    (never the attacked test images); ``what`` and ``hint`` word the error an empty split
    raises."""
    if not len(data.y_val):
        raise ConfigError(
            f"{what} sets its threshold on the validation split, but it is empty", hint=hint
        )
    scores = split_scores(detector, model, data.x_val, outputs.split("val"), batch_size)
    return float(threshold_at(scores, fpr))


def detector_scores(
    model: torch.nn.Module, detector: Any, x: Tensor, batch_size: int
) -> tuple[Tensor, Tensor]:
    """(predictions, detector scores) of ``model`` + ``detector`` on images (CPU)."""
    return score_images(detector, model, x, batch_size)


def detect(ctx: ThreatContext, x_adv: Tensor) -> tuple[Tensor, DetectionResult]:
    """The target model's predictions on ``x_adv`` and the detection AUC of its detector over the
    (clean, adversarial) pairs of the attacked subset."""
    adv_pred, _, result = detect_scored(ctx, x_adv)
    return adv_pred, result


def detect_scored(ctx: ThreatContext, x_adv: Tensor) -> tuple[Tensor, Tensor, DetectionResult]:
    """:func:`detect` with the detector's scores of ``x_adv`` (CPU) between its two results."""
    adv_pred, adv_scores = detector_scores(
        ctx.model, ctx.detector, x_adv, ctx.cfg.evaluate.batch_size
    )
    result = detection_auc(
        ctx.clean_scores,
        adv_scores,
        ctx.y,
        ctx.clean_pred,
        adv_pred,
        min_pairs=ctx.cfg.threat_model.min_pairs,
        seed=ctx.cfg.threat_model.seed,
    )
    return adv_pred, adv_scores, result
