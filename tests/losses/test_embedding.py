"""Embedding diagnostics: DBI = scikit-learn's, the PDM cluster scores by hand, input-gradient
norm against a per-sample loop, the Jacobian estimate against the exact Jacobian, and the t-SNE
figure."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import davies_bouldin_score
from torch import nn

from robustctl.evaluation.embedding import (
    cluster_distance,
    cluster_variance,
    davies_bouldin,
    embedding_diagnostics,
    input_grad_norm,
    jacobian_frobenius,
    tsne_figure,
)
from robustctl.losses.reverse_cross_entropy import ReverseCrossEntropy
from robustctl.models import ResNet

METRICS = {
    "embed/dbi",
    "embed/cluster_variance",
    "embed/cluster_distance",
    "embed/input_grad_norm",
    "embed/input_grad_norm_ce",
    "embed/jacobian_fro",
}


def tiny_model(sign: float = 1.0) -> ResNet:
    torch.manual_seed(0)
    model = ResNet(depth=8, num_classes=3, in_channels=1, width=2, logit_sign=sign)
    # one training-mode pass gives BatchNorm non-trivial running statistics
    model(torch.rand(16, 1, 6, 6))
    return model.eval()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dbi_equals_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    k = 2 + seed * 3
    labels = rng.integers(0, k, 300)
    emb = rng.normal(size=(k, 16))[labels] * 3 + rng.normal(size=(300, 16))
    assert davies_bouldin(emb, labels) == pytest.approx(
        davies_bouldin_score(emb, labels), rel=1e-10
    )
    assert davies_bouldin(
        torch.tensor(emb, dtype=torch.float32), torch.tensor(labels)
    ) == pytest.approx(davies_bouldin_score(emb, labels), rel=1e-5)


def test_dbi_with_coincident_centroids_matches_scikit_learn():
    emb = np.array([[0.0, 1.0], [0.0, -1.0], [1.0, 0.0], [-1.0, 0.0], [5.0, 5.0], [6.0, 5.0]])
    labels = np.array([0, 0, 1, 1, 2, 2])  # classes 0 and 1 share the centroid (0, 0)
    assert davies_bouldin(emb, labels) == pytest.approx(davies_bouldin_score(emb, labels))


def test_cluster_variance_and_distance_by_hand():
    # class 0: (0,0), (2,0): mu (1,0), variance 1
    # class 1: (0,1), (0,3), (0,5): mu (0,3), variance 8/3
    # class 2: (4,3) alone: variance 0
    emb = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, 3.0], [0.0, 5.0], [4.0, 3.0]])
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    assert cluster_variance(emb, labels) == pytest.approx(1 + 8 / 3)  # paper: sum over classes
    # ||mu0 - mu1||^2 = 10, ||mu0 - mu2||^2 = 18, ||mu1 - mu2||^2 = 16;
    # each ordered pair once / (3 * 2)
    assert cluster_distance(emb, labels) == pytest.approx(2 * (10 + 18 + 16) / 6)


def test_input_grad_norm_equals_a_per_sample_loop():
    model = tiny_model(sign=-1.0)
    x, y = torch.rand(7, 1, 6, 6), torch.tensor([0, 1, 2, 0, 1, 2, 0])
    norms = []
    for i in range(7):  # one sample at a time, CE of -Z
        xi = x[i : i + 1].clone().requires_grad_(True)
        loss = F.cross_entropy(-model(xi).logits, y[i : i + 1])
        norms.append(torch.autograd.grad(loss, xi)[0].norm().item())
    assert input_grad_norm(model, x, y, batch_size=3) == pytest.approx(sum(norms) / 7, rel=1e-5)
    # with the training loss (RCE) instead of the default CE of the prediction logits
    rce = ReverseCrossEntropy()
    rce_norms = []
    for i in range(7):
        xi = x[i : i + 1].clone().requires_grad_(True)
        rce_norms.append(
            torch.autograd.grad(rce(model(xi), y[i : i + 1]).total, xi)[0].norm().item()
        )
    assert input_grad_norm(model, x, y, rce.sample_losses, batch_size=4) == pytest.approx(
        sum(rce_norms) / 7, rel=1e-5
    )
    assert not model.training


@pytest.mark.slow  # 44 s on the quiet 2-core machine: the exact Jacobian, row by row
def test_jacobian_estimate_matches_the_exact_frobenius_norm():
    model = tiny_model()
    x = torch.rand(4, 1, 6, 6)
    exact_sq = [
        torch.autograd.functional.jacobian(lambda xi: model.embed(xi[None])[0], x[i])
        .pow(2)
        .sum()
        .item()
        for i in range(4)
    ]
    exact = math.sqrt(sum(exact_sq) / 4)
    estimate = jacobian_frobenius(
        model, x, n_proj=600, batch_size=3, generator=torch.Generator().manual_seed(0)
    )
    assert estimate == pytest.approx(exact, rel=0.05)


def test_jacobian_of_a_linear_embedding_is_its_weight():
    class Linear(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.randn(5, 12, generator=torch.Generator().manual_seed(3)))

        def embed(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1) @ self.w.T

    model = Linear()
    estimate = jacobian_frobenius(
        model, torch.rand(50, 3, 2, 2), n_proj=40, generator=torch.Generator().manual_seed(1)
    )
    assert estimate == pytest.approx(model.w.norm().item(), rel=0.05)


def test_tsne_figure_has_the_dbi_in_its_title_and_subsamples():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 500)
    emb = rng.normal(size=(3, 8))[labels] * 4 + rng.normal(size=(500, 8))
    fig = tsne_figure(emb, labels, ["a", "b", "c"], dbi=0.4567, max_points=150)
    ax = fig.axes[0]
    assert "DBI 0.457" in ax.get_title()
    assert len(ax.collections) == 3
    assert sum(len(c.get_offsets()) for c in ax.collections) == 150
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b", "c"]


def test_embedding_diagnostics_returns_the_spec_metrics():
    model = tiny_model(sign=-1.0)
    x, y = torch.rand(30, 1, 6, 6), torch.arange(30) % 3
    metrics = embedding_diagnostics(model, x, y, ReverseCrossEntropy(), batch_size=8, n_proj=4)
    assert set(metrics) == METRICS
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
    emb = model.embed(x).detach()
    assert metrics["embed/dbi"] == pytest.approx(
        davies_bouldin_score(emb.numpy(), y.numpy()), rel=1e-4
    )
    assert metrics["embed/input_grad_norm"] == pytest.approx(
        input_grad_norm(model, x, y, ReverseCrossEntropy().sample_losses), rel=1e-5
    )
    assert metrics["embed/input_grad_norm"] != pytest.approx(input_grad_norm(model, x, y), rel=1e-3)
    # one measure for every model: CE of the prediction logits (-Z for this RCE model), by a loop
    norms = []
    for i in range(len(x)):
        xi = x[i : i + 1].clone().requires_grad_(True)
        loss = F.cross_entropy(-model(xi).logits, y[i : i + 1])
        norms.append(torch.autograd.grad(loss, xi)[0].norm().item())
    assert metrics["embed/input_grad_norm_ce"] == pytest.approx(sum(norms) / len(x), rel=1e-5)
