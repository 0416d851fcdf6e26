"""Gradient norms along BIM's path (PDM section 4.2): how steep the loss stays as an iterative
attack walks away from the clean input.

L = CE of the prediction logits and the true label, summed over the batch. After each BIM step k
(k = 0 is the clean input) the mean over examples of

- ``bim_path/<attack>/embedding_grad_norm`` = ||dL/dz||_2 at the embedding z (models with one),
- ``bim_path/<attack>/input_grad_norm``     = ||dL/dx||_2 at the input x,

returned as lists indexed by step, to log as step metrics.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustctl import metric_keys as keys
from robustctl.attacks import BIM
from robustctl.attacks.base import flat_norm
from robustctl.inference import eval_mode, model_device, prediction_logits


def _grad_norms(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor | None, Tensor]:
    """Per example (||dL/dz||_2 or None without an embedding, ||dL/dx||_2)."""
    x = x.detach().requires_grad_(True)
    if all(hasattr(model, a) for a in ("embed", "head", "logit_sign")):
        z = model.embed(x)
        loss = F.cross_entropy(model.logit_sign * model.head(z), y, reduction="sum")
        gz, gx = torch.autograd.grad(loss, [z, x])
        return flat_norm(gz), flat_norm(gx)
    (gx,) = torch.autograd.grad(F.cross_entropy(prediction_logits(model, x), y, reduction="sum"), x)
    return None, flat_norm(gx)


def bim_gradient_norms(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float = 0.1,
    steps: int = 10,
    alpha: float | None = None,
    batch_size: int = 256,
    name: str | None = None,
) -> dict[str, list[float]]:
    """Mean gradient norms along BIM's path: ``{key: [value at step 0 (clean), 1, ..., steps]}``;
    ``name`` (the ``<attack>`` of the keys) defaults to ``bim-<eps>``."""
    name = name or f"bim-{eps:g}"
    device = model_device(model, default=x.device)
    sums_z = torch.zeros(steps + 1, dtype=torch.float64)
    sums_x = torch.zeros(steps + 1, dtype=torch.float64)
    has_z = True
    attack = BIM(model, eps=eps, steps=steps, alpha=alpha)
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size].to(device), y[start : start + batch_size].to(device)

        def record(k: int, x_k: Tensor, yb: Tensor = yb) -> None:
            nonlocal has_z
            gz, gx = _grad_norms(model, x_k, yb)
            sums_x[k] += float(gx.sum())
            if gz is None:
                has_z = False
            else:
                sums_z[k] += float(gz.sum())

        with eval_mode(model), torch.enable_grad():
            record(0, xb)
        attack.step_callback = record
        attack(xb, yb)
    n = max(len(x), 1)
    out = {keys.bim_path(name, keys.INPUT_GRAD_NORM): (sums_x / n).tolist()}
    if has_z:
        out = {keys.bim_path(name, keys.EMBEDDING_GRAD_NORM): (sums_z / n).tolist(), **out}
    return out
