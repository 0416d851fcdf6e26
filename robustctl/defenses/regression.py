"""The logistic regression every detector that combines scores fits (``lid``, ``mahalanobis``
with several layers, ``combined`` and ``kde_bu``): one definition, :class:`LogisticCombiner`.

Features f_i in R^F (per-layer LIDs or distances, member detectors' scores) with labels
y_i in {0, 1} (clean, adversarial) are standardized with the fit set's mean and population
standard deviation (ddof 0; a constant column gets scale 1, as scikit-learn's StandardScaler),
and (w, b) minimize

    sum_i [softplus(s_i) - y_i s_i] + ||w||^2 / (2 C),    s_i = w . f_i + b,

the L2-penalized log-loss with the intercept b unpenalized and C = the detector's ``lr_c``: the
same objective as ``sklearn.linear_model.LogisticRegression(C=C)``. It is solved by Newton's
method with step halving in float64 (:func:`fit_logistic_regression`). The detector's score is
the logit w . (f - mean) / scale + b: linear in the features, so a white-box attack
differentiates through it.

``MIN_FIT_PAIRS``: with ``successful_only``, the fit keeps only the (clean, adversarial) pairs
whose clean image the model classifies correctly and whose adversarial example it misclassifies,
unless fewer than this many are (:func:`robustctl.defenses.base.crafted_pairs`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "MIN_FIT_PAIRS",
    "LogisticCombiner",
    "adopt_shapes",
    "fit_logistic_regression",
    "with_defaults",
]

MIN_FIT_PAIRS = 10  # fewer successful (clean-correct, adversarial-wrong) pairs: use all pairs


def fit_logistic_regression(
    features: Tensor, labels: Tensor, c: float, max_iter: int = 100, tol: float = 1e-10
) -> tuple[Tensor, Tensor]:
    """(w [M], b []) minimizing sum_i logloss(w.f_i + b, y_i) + ||w||^2 / (2 c) (b unpenalized),
    by Newton's method with step halving, in float64. Stops when the largest gradient entry is
    below ``tol`` times the number of samples, or after ``max_iter`` steps."""
    f = features.detach().to(torch.float64).cpu()
    y = labels.detach().to(torch.float64).cpu()
    n, m = f.shape
    x = torch.cat([f, torch.ones(n, 1, dtype=torch.float64)], 1)
    penalty = torch.full((m + 1,), 1.0 / c, dtype=torch.float64)
    penalty[-1] = 0.0
    theta = torch.zeros(m + 1, dtype=torch.float64)

    def objective(t: Tensor) -> float:
        s = x @ t
        return float((nn.functional.softplus(s) - y * s).sum() + 0.5 * (penalty * t * t).sum())

    for _ in range(max_iter):
        p = torch.sigmoid(x @ theta)
        grad = x.T @ (p - y) + penalty * theta
        if float(grad.abs().max()) < tol * max(n, 1):
            break
        hess = x.T @ ((p * (1 - p)).unsqueeze(1) * x) + torch.diag(penalty)
        hess += 1e-12 * torch.eye(m + 1, dtype=torch.float64)  # a separable fit: keep it solvable
        step = torch.linalg.solve(hess, grad)
        current, t = objective(theta), 1.0
        while objective(theta - t * step) > current and t > 1e-12:
            t /= 2
        theta = theta - t * step
    return theta[:m].clone(), theta[m].clone()


def adopt_shapes(module: nn.Module, state_dict: dict[str, Any], prefix: str) -> None:
    """Resize ``module``'s own buffers to the checkpoint's shapes (a fit sizes them), keeping
    their dtype and device; call it from ``_load_from_state_dict`` before loading."""
    for name, cur in list(module._buffers.items()):
        if cur is not None and prefix + name in state_dict:
            module._buffers[name] = torch.empty(
                state_dict[prefix + name].shape, dtype=cur.dtype, device=cur.device
            )


def with_defaults(
    state_dict: dict[str, Any], prefix: str, defaults: dict[str, Tensor]
) -> dict[str, Any]:
    """``state_dict`` with ``prefix + name`` set to ``defaults[name]`` where it lacks that key (a
    checkpoint saved before the buffer existed), as a new dict: the caller's is left alone. For
    ``_load_from_state_dict``, before :func:`adopt_shapes`."""
    missing = {prefix + k: v for k, v in defaults.items() if prefix + k not in state_dict}
    return {**state_dict, **missing} if missing else state_dict


class LogisticCombiner(nn.Module):
    """Standardized L2-regularized logistic regression; ``forward`` gives the logit (module
    docstring for the objective).

    ``fit(features [N, F], labels [N] in {0, 1}, c)``: standardize with the fit set's mean and
    population std, then solve by :func:`fit_logistic_regression` (float64); the buffers stay on
    the module's device. ``forward(features)`` = ``((features - mean) / scale) @ weight + bias``
    in the features' dtype: linear, so differentiable in the features. Buffers: ``mean``,
    ``scale``, ``weight`` [F] and ``bias`` [] (float64 until ``.to(dtype)``), ``train_accuracy``
    and ``train_examples`` [] (the fit's accuracy at logit 0, in-sample, and its size).
    """

    mean: Tensor
    scale: Tensor
    weight: Tensor
    bias: Tensor
    train_accuracy: Tensor
    train_examples: Tensor

    def __init__(self) -> None:
        super().__init__()
        for name in ("mean", "scale", "weight"):
            self.register_buffer(name, torch.zeros(0, dtype=torch.float64))
        self.register_buffer("bias", torch.tensor(0.0, dtype=torch.float64))
        self.register_buffer("train_accuracy", torch.tensor(math.nan))
        self.register_buffer("train_examples", torch.tensor(0.0))

    @property
    def fitted(self) -> bool:
        return self.weight.numel() > 0

    def fit(self, features: Tensor, labels: Tensor, c: float = 1.0) -> LogisticCombiner:
        x = torch.as_tensor(features).detach().to("cpu", torch.float64)
        y = torch.as_tensor(labels).detach().to("cpu", torch.float64)
        if x.dim() != 2 or y.shape != (x.shape[0],):
            raise ValueError(f"need features [N, F] and labels [N], got {x.shape}, {y.shape}")
        if not torch.isfinite(x).all():
            raise ValueError("logistic regression features contain NaN or inf")
        if not ((y == 0) | (y == 1)).all() or y.min() == y.max():
            raise ValueError("logistic regression needs labels 0 and 1, both present")
        mean, std = x.mean(0), x.std(0, correction=0)
        scale = torch.where(std > 0, std, torch.ones_like(std))
        xs = (x - mean) / scale
        weight, bias = fit_logistic_regression(xs, y, float(c))
        accuracy = float(((xs @ weight + bias > 0).double() == y).double().mean())
        device = self.bias.device
        self.mean, self.scale = mean.to(device), scale.to(device)
        self.weight, self.bias = weight.to(device), bias.to(device)
        self.train_accuracy = torch.tensor(accuracy, device=device)
        self.train_examples = torch.tensor(float(len(y)), device=device)
        return self

    def forward(self, features: Tensor) -> Tensor:
        dt = features.dtype
        z = (features - self.mean.to(dt)) / self.scale.to(dt)
        return z @ self.weight.to(dt) + self.bias.to(dt)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        adopt_shapes(self, state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
