"""Embedding diagnostics (PDM sections 2-3, Figure 2): how clustered the embedding is, how steep
the network is around the test data. Pure functions; nothing here talks to MLflow.

With z the embedding (64-d pre-logits), M classes, mu_c the mean of the N_c embeddings of class c:

- ``davies_bouldin``: Davies & Bouldin (1979), as ``sklearn.metrics.davies_bouldin_score``:
  s_c = mean_i ||z_i - mu_c|| (Euclidean, not squared), R_cd = (s_c + s_d) / ||mu_c - mu_d||,
  DBI = (1/M) sum_c max_{d != c} R_cd. Lower = tighter, better separated clusters.
- ``cluster_variance`` (PDM section 3): sum_c (1/N_c) sum_{i in c} ||z_i - mu_c||^2. As in the
  paper this *sums* over classes; RVL is the same quantity averaged over classes (divided by M).
- ``cluster_distance`` (PDM section 3): (1/M) sum_c 1/(M-1) sum_{d != c} ||mu_d - mu_c||^2, the mean
  squared distance between class centroids.
- ``input_grad_norm``: mean over samples of ||grad_x l(x, y)||_2 with l the per-sample loss (by
  default the loss the model was trained with, e.g. RCE for an RCE model; PDM section 3.3 reports
  RCE making these 5-10x smaller than CE). Because that loss differs between models,
  ``input_grad_norm_ce`` is also reported: the same norm for CE of the prediction logits, one
  measure for every model.
- ``jacobian_frobenius``: root-mean-square over samples of ||J(x)||_F, J = dz/dx the embedding
  Jacobian [D, C*H*W], by random projections (Hutchinson): for v ~ N(0, I_D),
  E ||J^T v||^2 = E v^T J J^T v = trace(J J^T) = ||J||_F^2, and J^T v is one vector-Jacobian
  product (a backward pass of v . z). Averaging ``n_proj`` projections per sample over all samples
  estimates mean_x ||J(x)||_F^2 without bias; the square root of that is reported (relative
  standard error about 1 / sqrt(N * n_proj) for a well-spread spectrum).

Models are evaluated in eval mode (their mode is restored); every function that needs the network
takes a project model (``model(x) -> ModelOutput``, ``model.embed``, ``model.logit_sign``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from robustctl import metric_keys as keys
from robustctl.inference import eval_mode, model_device, predict
from robustctl.models.base import ModelOutput

SampleLoss = Callable[
    [ModelOutput, Tensor], Tensor
]  # (output, labels [N]) -> per-sample losses [N]


def _as_numpy(a: Any) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, Tensor) else np.asarray(a)


def _centroids(
    emb: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    classes = np.unique(labels)
    members = [emb[labels == c] for c in classes]
    return classes, np.stack([m.mean(axis=0) for m in members]), members


# ------------------------------------------------------------------------------- clustering scores
def davies_bouldin(emb: Tensor | np.ndarray, labels: Tensor | np.ndarray) -> float:
    """Davies-Bouldin index of embeddings [N, D] grouped by ``labels`` [N]; nan with < 2 classes."""
    z, y = _as_numpy(emb).astype(np.float64), _as_numpy(labels)
    classes, mu, members = _centroids(z, y)
    if len(classes) < 2:
        return float("nan")
    spread = np.array(
        [np.linalg.norm(m - c, axis=1).mean() for m, c in zip(members, mu, strict=True)]
    )
    sep = np.linalg.norm(mu[:, None, :] - mu[None, :, :], axis=2)
    if np.allclose(spread, 0) or np.allclose(sep, 0):
        return 0.0  # degenerate clusterings score 0, as scikit-learn's does
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = (spread[:, None] + spread[None, :]) / np.where(sep == 0, np.inf, sep)
    np.fill_diagonal(ratio, -np.inf)
    return float(ratio.max(axis=1).mean())


def dbi_missing_reason(labels: Tensor | np.ndarray) -> str | None:
    """Why the Davies-Bouldin index of embeddings grouped by ``labels`` is not a number, or None
    when it is one: it compares at least 2 clusters, and a cluster of one point has no spread
    (its s_c is 0 by construction, not by measurement)."""
    classes, counts = np.unique(_as_numpy(labels), return_counts=True)
    if len(classes) < 2:
        return f"DBI needs at least 2 classes with an example; the test set has {len(classes)}"
    singles = int((counts == 1).sum())
    if singles:
        return (
            f"DBI not computed: {singles} of {len(classes)} classes have a single test example "
            "(a cluster of one point has no spread); use more test images"
        )
    return None


def cluster_variance(emb: Tensor | np.ndarray, labels: Tensor | np.ndarray) -> float:
    """PDM section 3: sum over classes of the mean squared distance to the class centroid."""
    z, y = _as_numpy(emb).astype(np.float64), _as_numpy(labels)
    _, mu, members = _centroids(z, y)
    return float(sum(((m - c) ** 2).sum(axis=1).mean() for m, c in zip(members, mu, strict=True)))


def cluster_distance(emb: Tensor | np.ndarray, labels: Tensor | np.ndarray) -> float:
    """PDM section 3: mean squared distance between distinct class centroids; nan with < 2
    classes."""
    z, y = _as_numpy(emb).astype(np.float64), _as_numpy(labels)
    _, mu, _ = _centroids(z, y)
    m = len(mu)
    if m < 2:
        return float("nan")
    sq = ((mu[:, None, :] - mu[None, :, :]) ** 2).sum(axis=2)  # zero diagonal
    return float(sq.sum() / (m * (m - 1)))


# ---------------------------------------------------------------------------- smoothness of the net
def prediction_cross_entropy(
    output: ModelOutput, labels: Tensor, logit_sign: Tensor | float = 1.0
) -> Tensor:
    """Per-sample CE of the prediction logits ``logit_sign * Z`` (the default diagnostic loss)."""
    return F.cross_entropy(logit_sign * output.logits, labels, reduction="none")


def input_grad_norm(
    model: torch.nn.Module,
    x: Tensor,
    y: Tensor,
    loss: SampleLoss | None = None,
    batch_size: int = 256,
) -> float:
    """Mean over samples of ||grad_x loss(model(x), y)_i||_2 (flattened over C, H, W).

    ``loss(output, labels)`` must return per-sample losses [N] (e.g. ``loss_fn.sample_losses``);
    default: CE of the prediction logits. In eval mode the samples do not interact, so the gradient
    of the summed loss holds each sample's own gradient.
    """
    if loss is None:

        def loss(out: ModelOutput, labels: Tensor) -> Tensor:
            return prediction_cross_entropy(out, labels, model.logit_sign)

    device, total = model_device(model), 0.0
    with eval_mode(model):
        for start in range(0, len(x), batch_size):
            xb = x[start : start + batch_size].to(device).requires_grad_(True)
            yb = y[start : start + batch_size].to(device)
            values = loss(model(xb), yb)
            if values.shape != yb.shape:
                raise ValueError(
                    f"loss must return per-sample values of shape {tuple(yb.shape)}, "
                    f"got {tuple(values.shape)}"
                )
            (grad,) = torch.autograd.grad(values.sum(), xb)
            total += float(grad.flatten(1).norm(dim=1).sum())
    return total / max(len(x), 1)


def jacobian_frobenius(
    model: torch.nn.Module,
    x: Tensor,
    n_proj: int = 16,
    batch_size: int = 256,
    generator: torch.Generator | None = None,
) -> float:
    """Estimate sqrt(mean_x ||dz/dx||_F^2) with ``n_proj`` Gaussian projections per sample.

    ``||J^T v||^2`` with v ~ N(0, I_D) is an unbiased estimate of ``||J||_F^2`` (module docstring).
    ``generator`` (CPU) makes the projections reproducible.
    """
    if n_proj < 1:
        raise ValueError(f"n_proj must be >= 1, got {n_proj}")
    device, total = model_device(model), 0.0
    with eval_mode(model):
        for start in range(0, len(x), batch_size):
            xb = x[start : start + batch_size].to(device).requires_grad_(True)
            z = model.embed(xb)
            for k in range(n_proj):
                v = torch.randn(z.shape, generator=generator).to(device=device, dtype=z.dtype)
                (vjp,) = torch.autograd.grad(z, xb, grad_outputs=v, retain_graph=k < n_proj - 1)
                total += float(vjp.pow(2).sum())
    return math.sqrt(total / max(len(x) * n_proj, 1))


# ------------------------------------------------------------------------------------------ t-SNE
TSNE_MIN_POINTS = 2  # t-SNE's perplexity (>= 1 here) must be below the number of points


def tsne_figure(
    emb: Tensor | np.ndarray,
    labels: Tensor | np.ndarray,
    class_names: Sequence[str],
    dbi: float,
    max_points: int = 2000,
    seed: int = 0,
    title: str = "t-SNE of embeddings",
):
    """Paper Figure 2: 2-D t-SNE of the embeddings coloured by class, DBI in the title ("n/a"
    when ``dbi`` is not finite). Needs at least 2 points (:data:`TSNE_MIN_POINTS`).

    Subsamples at most ``max_points`` points (seeded) for speed. Returns a matplotlib ``Figure``
    with an Agg canvas (no pyplot state, safe in headless runs).
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from sklearn.manifold import TSNE

    z, y = _as_numpy(emb).astype(np.float32), _as_numpy(labels)
    if len(y) > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(len(y), max_points, replace=False))
        z, y = z[keep], y[keep]
    perplexity = float(min(30.0, max((len(y) - 1) / 3.0, 1.0)))
    xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(z)
    fig = Figure(figsize=(6.0, 5.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colors = matplotlib.colormaps["tab10" if len(class_names) <= 10 else "tab20"]
    for c in np.unique(y):
        pts = xy[y == c]
        name = class_names[int(c)] if int(c) < len(class_names) else str(int(c))
        ax.scatter(pts[:, 0], pts[:, 1], s=4, color=colors(int(c) % colors.N), label=name)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"{title} (DBI {dbi:.3f})" if math.isfinite(dbi) else f"{title} (DBI n/a)")
    ax.legend(markerscale=3, fontsize=7, loc="best", frameon=False)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------ all
def embedding_diagnostics(
    model: torch.nn.Module,
    x: Tensor,
    y: Tensor,
    loss_fn: Any = None,
    batch_size: int = 256,
    *,
    jacobian_samples: int = 512,
    n_proj: int = 16,
    seed: int = 0,
    embeddings: Tensor | None = None,
) -> dict[str, float]:
    """All scalar diagnostics of a model on (test) data, under their docs/metrics.md names;
    ``embed/dbi`` is left out when it is not a number (:func:`dbi_missing_reason` says why).

    ``loss_fn``: the training loss (its ``sample_losses`` is the loss whose input gradient
    ``embed/input_grad_norm`` measures), or None for CE of the prediction logits. The Jacobian
    estimate uses the first ``jacobian_samples`` inputs with ``n_proj`` projections each, seeded by
    ``seed``. ``embeddings``: the model's embeddings of x when already computed (else one pass).
    """
    emb = predict(model, x, batch_size)[1] if embeddings is None else embeddings
    y_cpu = y.cpu()
    sample_loss = getattr(loss_fn, "sample_losses", None) if loss_fn is not None else None
    generator = torch.Generator().manual_seed(seed)
    dbi = {} if dbi_missing_reason(y_cpu) else {keys.EMBED_DBI: davies_bouldin(emb, y_cpu)}
    return {
        **dbi,
        keys.EMBED_CLUSTER_VARIANCE: cluster_variance(emb, y_cpu),
        keys.EMBED_CLUSTER_DISTANCE: cluster_distance(emb, y_cpu),
        keys.EMBED_INPUT_GRAD_NORM: input_grad_norm(model, x, y, sample_loss, batch_size),
        keys.EMBED_INPUT_GRAD_NORM_CE: input_grad_norm(model, x, y, None, batch_size),
        keys.EMBED_JACOBIAN_FRO: jacobian_frobenius(
            model, x[:jacobian_samples], n_proj, batch_size, generator
        ),
    }
