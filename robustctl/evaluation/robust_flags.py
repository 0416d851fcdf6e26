"""The flags a careful evaluator raises beside a robust accuracy (AutoAttack's checks, RobustBench's
admission rules), each computed, not assumed:

- ``randomized``: two forward passes of the model in eval mode on the same images disagree (any
  logit differs by more than 1e-5 of the logits' scale): the number needs the ``rand`` version
  (expectation over transformations) and a worst case over repeated evaluations;
- ``zero_gradients``: the input gradient of the cross-entropy of the prediction logits is exactly
  zero on some correctly classified points: gradient attacks cannot move there, so their failure
  there proves nothing (gradient masking);
- ``gradient_free_beats_gradients``: a gradient-free member (Square) broke points every gradient
  attack before it failed on: a sign of masked gradients;
- ``train_mode_differs``: clean accuracy in train mode (on a copy, so batch-norm statistics are
  untouched) differs from eval mode's by more than one point: the model's modes disagree, so the
  mode it is attacked in matters;
- ``softmax_outputs``: the prediction outputs are probabilities (non-negative, rows summing to 1):
  losses on them saturate; attack the logits.

Each :class:`Flag` carries whether it is raised, the count behind it and one sentence.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustctl.evaluation.robust_accuracy import EnsembleResult
from robustctl.inference import eval_mode, model_device, prediction_logits

RELATIVE_TOLERANCE = 1e-5
MODE_GAP = 0.01  # accuracies more than one point apart


@dataclass(frozen=True)
class Flag:
    name: str
    raised: bool
    count: int  # points (or images) behind the flag
    text: str


def _logits(model: nn.Module, x: Tensor, batch_size: int) -> Tensor:
    device = model_device(model)
    with torch.no_grad():
        return torch.cat(
            [
                prediction_logits(model, x[i : i + batch_size].to(device)).cpu()
                for i in range(0, len(x), batch_size)
            ]
        )


def randomized(model: nn.Module, x: Tensor, batch_size: int = 256) -> Flag:
    with eval_mode(model):
        first, second = _logits(model, x, batch_size), _logits(model, x, batch_size)
    scale = first.abs().max().clamp_min(1e-12)
    differ = int(((first - second).abs().amax(1) > RELATIVE_TOLERANCE * scale).sum())
    return Flag(
        "randomized",
        differ > 0,
        differ,
        f"two forward passes disagree on {differ} of {len(x)} images: use the rand version"
        if differ
        else f"two forward passes agree on all {len(x)} images",
    )


def zero_gradients(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 256) -> Flag:
    device, zero, correct_total = model_device(model), 0, 0
    with eval_mode(model):
        for i in range(0, len(x), batch_size):
            xb = x[i : i + batch_size].to(device).requires_grad_(True)
            yb = y[i : i + batch_size].to(device)
            logits = prediction_logits(model, xb)
            (grad,) = torch.autograd.grad(F.cross_entropy(logits, yb, reduction="sum"), xb)
            correct = logits.argmax(1) == yb
            flat = grad.flatten(1).abs().amax(1) == 0
            zero += int((flat & correct).sum())
            correct_total += int(correct.sum())
    return Flag(
        "zero_gradients",
        zero > 0,
        zero,
        f"the input gradient is exactly zero on {zero} of {correct_total} correctly classified "
        "points: gradient attacks cannot be trusted there",
    )


def gradient_free_beats_gradients(result: EnsembleResult) -> Flag:
    gradient_seen = False
    count = 0
    for i, member in enumerate(result.members):
        if member.gradient_free and gradient_seen:
            count += result.broken(i)
        gradient_seen = gradient_seen or not member.gradient_free
    labels = [m.label for m in result.members if m.gradient_free]
    return Flag(
        "gradient_free_beats_gradients",
        count > 0,
        count,
        f"{'/'.join(labels) or 'no gradient-free attack'} broke {count} points the gradient "
        "attacks failed on" + (": gradients may be masked" if count else ""),
    )


def train_mode_differs(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 256) -> Flag:
    with eval_mode(model):
        eval_acc = float((_logits(model, x, batch_size).argmax(1) == y.cpu()).float().mean())
    twin = copy.deepcopy(model).train()
    if len(x) % batch_size == 1:  # batch norm in train mode needs two images per batch
        batch_size += 1
    train_acc = float((_logits(twin, x, batch_size).argmax(1) == y.cpu()).float().mean())
    gap = abs(train_acc - eval_acc)
    return Flag(
        "train_mode_differs",
        gap > MODE_GAP,
        round(gap * len(x)),
        f"clean accuracy {eval_acc:.4f} in eval mode, {train_acc:.4f} in train mode",
    )


def softmax_outputs(model: nn.Module, x: Tensor, batch_size: int = 256) -> Flag:
    with eval_mode(model):
        out = _logits(model, x, batch_size)
    probabilities = bool((out >= 0).all() and torch.allclose(out.sum(1), torch.ones(len(out))))
    return Flag(
        "softmax_outputs",
        probabilities,
        len(x) if probabilities else 0,
        "the prediction outputs are probabilities: attack the logits"
        if probabilities
        else "the prediction outputs are logits",
    )


def evaluation_flags(
    model: nn.Module, x: Tensor, y: Tensor, result: EnsembleResult, batch_size: int = 256
) -> list[Flag]:
    """Every flag of the module docstring, in its order."""
    return [
        randomized(model, x, batch_size),
        zero_gradients(model, x, y, batch_size),
        gradient_free_beats_gradients(result),
        train_mode_differs(model, x, y, batch_size),
        softmax_outputs(model, x, batch_size),
    ]
