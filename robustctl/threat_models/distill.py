"""Black-box proxy training: distil a target model's outputs into a fresh model (PDM Appendix D).

The attacker has the training inputs and query access to the target only. Targets for training
input x are the target's prediction logits Z_t(x) (its prediction view, so an RCE model is queried
as it predicts):
- ``soft``: p = softmax(Z_t / T); the proxy minimizes -sum_k p_k log softmax(Z_p / T)_k, times T^2
  (Hinton et al. 2015: keeps gradient magnitudes comparable across temperatures);
- ``hard``: y = argmax Z_t; the proxy minimizes cross-entropy on y.
Targets describe the image the proxy trains on: with augmentation they are queried per batch, on
the batch as the proxy sees it (cropped, flipped); without it they are computed once per training
image and reused every epoch.
The proxy is trained with plain cross-entropy semantics (logit_sign +1), SGD + momentum and a
cosine schedule; agreement = fraction of test inputs where both models predict the same class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from robustctl.console import progress
from robustctl.data.base import ImageData, iterate_batches
from robustctl.inference import ModelOutputs, eval_mode, model_device, predict
from robustctl.models import ResNet, build_model
from robustctl.threat_models.schema import DISTILL_MODES
from robustctl.training.schedule import learning_rate
from robustctl.training.speed import sync_interval


@dataclass
class DistillResult:
    proxy: ResNet
    agreement: float  # test inputs where proxy and target predict the same class
    proxy_accuracy: float


def distillation_targets(
    target: torch.nn.Module, x: Tensor, mode: str, temperature: float
) -> Tensor:
    """Soft probabilities [N, K] at ``temperature`` or hard labels [N] from the target's
    prediction logits on the batch ``x`` (on the target's device)."""
    with torch.no_grad(), eval_mode(target):
        logits = target.logit_sign * target.head(target.embed(x.to(model_device(target))))
    if mode == "hard":
        return logits.argmax(1)
    return F.softmax(logits / temperature, dim=1)


def distillation_loss(
    proxy_logits: Tensor, targets: Tensor, mode: str, temperature: float
) -> Tensor:
    if mode == "hard":
        return F.cross_entropy(proxy_logits, targets)
    log_p = F.log_softmax(proxy_logits / temperature, dim=1)
    return -(targets * log_p).sum(1).mean() * temperature**2


def distill(
    target: ResNet,
    data: ImageData,
    model_cfg: Any,
    *,
    mode: str = "soft",
    temperature: float = 4.0,
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    seed: int = 0,
    device: torch.device | str = "cpu",
    target_outputs: ModelOutputs | None = None,
) -> DistillResult:
    if mode not in DISTILL_MODES:
        raise ValueError(f"mode must be one of {DISTILL_MODES}, got {mode!r}")
    torch.manual_seed(seed)
    proxy = build_model(
        model_cfg,
        num_classes=data.num_classes,
        in_channels=data.image_shape[0],
        mean=target.mean.flatten().tolist(),
        std=target.std.flatten().tolist(),
    ).to(device)
    optimizer = torch.optim.SGD(
        proxy.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay
    )
    device = torch.device(device)
    # the training split, its shuffling and augmentation live on the device, as in training
    x_train, y_train = data.x_train.to(device), data.y_train.to(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    steps = math.ceil(len(data.y_train) / batch_size)
    fixed = (  # un-augmented images: one query per training image, not one per epoch
        None
        if data.augment
        else torch.cat(
            [
                distillation_targets(target, x_train[i : i + 512], mode, temperature).to(device)
                for i in range(0, len(data.y_train), 512)
            ]
        )
    )
    every = sync_interval(device)
    with progress() as bar:
        task = bar.add_task(f"distil {model_cfg.name}", total=epochs * steps, status="")
        for epoch in range(epochs):
            proxy.train()
            for b, (xb, _, idx) in enumerate(
                iterate_batches(
                    x_train,
                    y_train,
                    batch_size,
                    generator=generator,
                    augment=data.augment,
                )
            ):
                step = epoch * steps + b
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(step, epochs * steps, base_lr=lr, schedule="cosine")
                tb = (
                    distillation_targets(target, xb, mode, temperature).to(device)
                    if fixed is None
                    else fixed[idx]
                )
                loss = distillation_loss(proxy(xb).logits, tb, mode, temperature)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                bar.update(task, advance=1)
                if (b + 1) % every == 0:  # a host read: every step on the CPU only
                    bar.update(task, status=f"loss {loss.item():.3f}")
    proxy.eval()
    proxy_pred = predict(proxy, data.x_test)[0].argmax(1)
    target_pred = (
        target_outputs.split("test").predictions
        if target_outputs is not None
        else predict(target, data.x_test)[0].argmax(1)
    )
    return DistillResult(
        proxy,
        (proxy_pred == target_pred).float().mean().item(),
        (proxy_pred == data.y_test).float().mean().item(),
    )
