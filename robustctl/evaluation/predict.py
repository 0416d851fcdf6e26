"""Batched inference in eval mode: prediction logits and embeddings for a whole tensor."""

from __future__ import annotations

import torch
from torch import Tensor

from robustctl.models.resnet import ResNet


@torch.no_grad()
def predict(model: ResNet, x: Tensor, batch_size: int = 512) -> tuple[Tensor, Tensor]:
    """Returns ``(prediction_logits, embeddings)`` on the CPU, computed batch by batch on the model's device."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    logits, embeddings = [], []
    try:
        for start in range(0, len(x), batch_size):
            xb = x[start:start + batch_size].to(device, non_blocking=True)
            z = model.embed(xb)
            logits.append((model.logit_sign * model.head(z)).cpu())
            embeddings.append(z.cpu())
    finally:
        model.train(was_training)
    if not logits:
        return torch.empty(0, model.num_classes), torch.empty(0, model.embedding_dim)
    return torch.cat(logits), torch.cat(embeddings)


def accuracy(model: ResNet, x: Tensor, y: Tensor, batch_size: int = 512) -> float:
    if len(y) == 0:
        return float("nan")
    logits, _ = predict(model, x, batch_size)
    return (logits.argmax(1) == y).float().mean().item()
