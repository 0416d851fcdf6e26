"""Run attacks over an evaluation set, batch by batch, and measure them.

:func:`run_attack` runs one attack on the model's device with a progress bar and returns an
:class:`AttackOutcome`: adversarial batch, success mask, predictions and the metrics
``<stage>/<attack>/{success_rate,clean_correct,distortion,l2,linf,l0}`` with 95% intervals
(:func:`attack_metrics`).

One meaning of "adversarial" for every number, targeted attacks included: an example is
adversarial when the model classifies it correctly clean and *misclassifies* it after the attack
(``adv_pred != y``), the same examples the detection AUC pairs with their clean versions.
``success_rate`` is the share of clean-correct examples that are adversarial (an attack on an
already-misclassified example proves nothing); the distortions are means over the adversarial
examples (NaN when there is none). A targeted attack also logs ``target_rate``: the share of
clean-correct examples classified as their target.

No MLflow here: the threat-model stages log what these functions return.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from robustctl import metric_keys as keys
from robustctl.attacks import Attack, build, build_from_config
from robustctl.attacks.metrics import per_example_distortions
from robustctl.console import console
from robustctl.evaluation.figures import adversarial_confusion_figure
from robustctl.evaluation.intervals import bootstrap_interval, wilson_interval
from robustctl.inference import MemoryBackoff, predict_labels


@dataclass
class AttackOutcome:
    """One attack's result over the whole evaluation set (tensors on the CPU)."""

    name: str
    x_adv: Tensor  # [N, C, H, W] adversarial batch, in [0, 1]
    success: Tensor  # [N] bool: the attack's own criterion (targeted: pred == target)
    adv_pred: Tensor  # [N] prediction on x_adv
    clean_pred: Tensor  # [N] prediction on the clean input
    labels: Tensor  # [N] true labels
    target: Tensor | None  # [N] targets of a targeted attack
    metrics: dict[str, float]
    seconds: float

    @property
    def adversarial(self) -> Tensor:
        """[N] bool: classified correctly clean and misclassified attacked (what the success rate
        counts, the distortions average and the AUC pairs)."""
        return adversarial_mask(self.labels, self.clean_pred, self.adv_pred)

    def confusion_figure(self, class_names: Sequence[str]) -> Any:
        mask = self.adversarial
        return adversarial_confusion_figure(
            self.labels[mask],
            self.adv_pred[mask],
            class_names,
            title=f"{self.name}: origin vs adversarial class",
        )


def progress_bar(enabled: bool) -> Any:
    """A rich progress bar context (or a null context yielding None when disabled)."""
    if not enabled:
        return nullcontext(None)
    from robustctl.console import progress

    return progress()


def resolve_attack(spec: str | Attack | Any, model: nn.Module) -> Attack:
    """An :class:`Attack` from an option name, an ``attack`` config or an attack."""
    if isinstance(spec, Attack):
        return spec
    if isinstance(spec, str):
        return build(spec, model)
    return build_from_config(spec, model)


def adversarial_mask(labels: Tensor, clean_pred: Tensor, adv_pred: Tensor) -> Tensor:
    """[N] bool: clean prediction correct and adversarial prediction wrong."""
    return (clean_pred == labels) & (adv_pred != labels)


def rate_metrics(key: str, hits: Tensor, trials: Tensor) -> dict[str, float]:
    """``key`` = share of ``trials`` with a hit, and its Wilson interval."""
    n, k = int(trials.sum()), int((hits & trials).sum())
    low, high = wilson_interval(k, n)
    return {key: k / n if n else float("nan"), keys.ci_low(key): low, keys.ci_high(key): high}


def attack_metrics(
    name: str,
    x: Tensor,
    x_adv: Tensor,
    labels: Tensor,
    clean_pred: Tensor,
    adv_pred: Tensor,
    target: Tensor | None = None,
    stage: str = keys.GRAYBOX,
    seed: int = 0,
) -> dict[str, float]:
    """Success rate (with its Wilson interval) over clean-correct examples, mean distortions over
    the adversarial ones (``distortion`` with a seeded bootstrap interval), and for a targeted
    attack the target rate."""
    correct = clean_pred == labels
    adversarial = adversarial_mask(labels, clean_pred, adv_pred)
    key = partial(keys.attack_key, stage, name)
    out = rate_metrics(key(keys.SUCCESS_RATE), adversarial, correct)
    out[key(keys.CLEAN_CORRECT)] = float(correct.sum())
    if target is not None:
        out.update(rate_metrics(key(keys.TARGET_RATE), adv_pred == target, correct))
    per = per_example_distortions(x, x_adv)
    for metric, values in per.items():
        chosen = values[adversarial].numpy()
        out[key(metric)] = float(chosen.mean()) if chosen.size else float("nan")
    low, high = bootstrap_interval(per["distortion"][adversarial].numpy(), seed=seed)
    out[key(keys.ci_low("distortion"))], out[key(keys.ci_high("distortion"))] = low, high
    return out


def run_attack(
    attack: Attack,
    x: Tensor,
    y: Tensor,
    batch_size: int = 256,
    bar: Any = None,
    clean_pred: Tensor | None = None,
    stage: str = keys.GRAYBOX,
    starts: Tensor | None = None,
) -> AttackOutcome:
    """Run one attack over (x, y) batch by batch; metrics keyed ``<stage>/<attack.name>/...``,
    with its cost: forward and backward passes per example (``forwards_per_example``,
    ``backwards_per_example``, :meth:`~robustctl.attacks.base.Attack.counted`);
    ``starts``: per-image starting points for an attack that takes them (``start=`` of its
    call: the white-box attacks' incumbents).

    A batch that runs out of device memory is retried in halves (:class:`MemoryBackoff`)."""
    clean_pred = predict_labels(attack.model, x, batch_size) if clean_pred is None else clean_pred
    n_batches = max(math.ceil(len(x) / batch_size), 1)
    task = bar.add_task(attack.name, total=n_batches, status="") if bar is not None else None
    parts: list[tuple[Tensor, Tensor, Tensor, Tensor | None]] = []
    started = time.perf_counter()
    forwards, backwards = attack.forwards, attack.backwards
    hits = done = 0
    backoff = MemoryBackoff(f"{attack.name} batches", batch_size, console.print)
    start = 0
    while start < len(x):
        end = start + backoff.size
        try:
            if starts is None:
                result = attack(x[start:end], y[start:end])
            else:
                result = attack(x[start:end], y[start:end], start=starts[start:end])
        except torch.OutOfMemoryError as error:
            backoff.shrink(error)  # retry the same images in smaller batches
            if bar is not None:
                remaining = math.ceil((len(x) - start) / backoff.size)
                bar.update(task, total=len(parts) + remaining)
            continue
        start += len(result.success)
        parts.append(
            (
                result.x_adv.cpu(),
                result.success.cpu(),
                result.pred.cpu(),
                None if result.target is None else result.target.cpu(),
            )
        )
        hits, done = hits + int(result.success.sum()), done + len(result.success)
        if bar is not None:
            bar.update(task, advance=1, status=f"success {hits / done:.1%}")
    seconds = time.perf_counter() - started
    if bar is not None:
        bar.remove_task(task)
    x_adv = torch.cat([p[0] for p in parts]) if parts else x.clone()
    success = torch.cat([p[1] for p in parts]) if parts else torch.zeros(0, dtype=torch.bool)
    adv_pred = torch.cat([p[2] for p in parts]) if parts else torch.zeros(0, dtype=torch.long)
    target = torch.cat([p[3] for p in parts]) if parts and parts[0][3] is not None else None
    y_cpu, x_cpu = y.cpu(), x.cpu()
    metrics = attack_metrics(
        attack.name, x_cpu, x_adv, y_cpu, clean_pred.cpu(), adv_pred, target, stage
    )
    per = max(len(x), 1)
    metrics[keys.attack_key(stage, attack.name, keys.FORWARDS_PER_EXAMPLE)] = (
        attack.forwards - forwards
    ) / per
    metrics[keys.attack_key(stage, attack.name, keys.BACKWARDS_PER_EXAMPLE)] = (
        attack.backwards - backwards
    ) / per
    return AttackOutcome(
        attack.name, x_adv, success, adv_pred, clean_pred, y_cpu, target, metrics, seconds
    )


def run_attack_suite(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    attack_names_or_cfgs: Iterable[str | Attack | Any],
    batch_size: int = 256,
    progress: bool = True,
) -> dict[str, AttackOutcome]:
    """Run each attack (an option name such as ``"fgsm-0.05"``, an ``attack`` config, or an
    :class:`Attack`) on (x, y); returns ``{attack name: AttackOutcome}``, in the given order."""
    attacks = [resolve_attack(spec, model) for spec in attack_names_or_cfgs]
    clean_pred = predict_labels(model, x, batch_size)
    outcomes: dict[str, AttackOutcome] = {}
    with progress_bar(progress) as bar:
        for attack in attacks:
            outcomes[attack.name] = run_attack(attack, x, y, batch_size, bar, clean_pred)
    return outcomes
