"""Center and contrastive-center losses: hand values, Wen et al.'s center update, and that they
tighten the classes of a toy problem compared with cross-entropy alone."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustctl.evaluation.embedding import cluster_distance, cluster_variance
from robustctl.losses import build_loss
from robustctl.losses.center import CenterLoss
from robustctl.losses.contrastive_center import ContrastiveCenterLoss
from robustctl.losses.schema import CenterLossConfig, ContrastiveCenterLossConfig, LossConfig
from robustctl.models.base import ModelOutput


def test_center_loss_and_update_by_hand():
    loss = CenterLoss(num_classes=2, embedding_dim=2, alpha=0.5)
    z = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    y = torch.tensor([0, 0, 1])
    # centers start at 0: L = 1/2 * mean(||z||^2) = 1/2 * (5 + 25 + 61) / 3
    assert loss(z, y).item() == pytest.approx(0.5 * 91 / 3)
    # update: class 0 (n=2): delta = ((0-1) + (0-3), (0-2) + (0-4)) / 3 = (-4/3, -2)
    #         class 1 (n=1): delta = (-5, -6) / 2
    #         c0 = -0.5 * delta (class 0), c1 = -0.5 * delta (class 1)
    expected = torch.tensor([[2 / 3, 1.0], [1.25, 1.5]])
    assert torch.allclose(loss.centers, expected)
    # the next loss uses the moved centers: 1/2 * ((1 - 2/3)^2 + (2 - 1)^2) = 5/9
    loss.eval()
    assert loss(z[:1], y[:1]).item() == pytest.approx(5 / 9)
    assert torch.allclose(loss.centers, expected)  # eval mode: no update
    assert "centers" in loss.state_dict()


def test_centers_need_a_class_count():
    with pytest.raises(ValueError, match="num_classes"):
        CenterLoss()(torch.zeros(2, 3), torch.tensor([0, 1]))
    lazy = CenterLoss()
    lazy(torch.ones(2, 3), torch.tensor([0, 1]), num_classes=5)
    assert lazy.centers.shape == (5, 3)


def test_absent_classes_keep_their_center():
    loss = CenterLoss(3, 2, alpha=1.0)
    loss(torch.tensor([[2.0, 2.0]]), torch.tensor([1]))
    assert torch.equal(loss.centers[0], torch.zeros(2)) and torch.equal(
        loss.centers[2], torch.zeros(2)
    )
    assert torch.allclose(loss.centers[1], torch.tensor([1.0, 1.0]))  # 0 - 1 * (0 - 2) / 2


def test_contrastive_center_by_hand():
    loss = ContrastiveCenterLoss(2, 2, delta=1.0).eval()
    loss.centers.copy_(torch.tensor([[0.0, 0.0], [3.0, 4.0]]))
    z = torch.tensor([[0.0, 1.0], [3.0, 4.0]])
    y = torch.tensor([0, 1])
    # sample 1: own ||(0,1)||^2 = 1, other ||(0,1) - (3,4)||^2 = 18 -> 1 / 19; sample 2: own = 0
    assert loss(z, y).item() == pytest.approx(0.5 * (1 / 19 + 0) / 2)


def _train_toy(cfg: LossConfig, steps: int = 150) -> tuple[float, float]:
    """Full-batch SGD on 3 noisy Gaussian blobs; returns (variance / distance, accuracy)."""
    g = torch.Generator().manual_seed(0)
    k, d_in, n = 3, 4, 300
    y = torch.arange(n) % k
    x = 2.0 * torch.randn(k, d_in, generator=g)[y] + 1.5 * torch.randn(n, d_in, generator=g)
    torch.manual_seed(0)
    body = nn.Sequential(nn.Linear(d_in, 32), nn.ReLU(), nn.Linear(32, 8))
    head = nn.Linear(8, k)
    loss_fn = build_loss(cfg)
    opt = torch.optim.SGD([*body.parameters(), *head.parameters()], lr=0.05, momentum=0.9)
    for _ in range(steps):
        z = body(x)
        total = loss_fn(ModelOutput(head(z), z), y).total
        opt.zero_grad()
        total.backward()
        opt.step()
    with torch.no_grad():
        z = body(x)
        acc = (head(z).argmax(1) == y).float().mean().item()
    return cluster_variance(z, y) / cluster_distance(z, y), acc


def test_center_losses_tighten_classes_on_a_toy_problem():
    ce_ratio, ce_acc = _train_toy(LossConfig())
    center_ratio, center_acc = _train_toy(CenterLossConfig(name="center", center_weight=1.0))
    cc_ratio, cc_acc = _train_toy(
        ContrastiveCenterLossConfig(name="contrastive_center", center_weight=1.0)
    )
    assert center_ratio < 0.6 * ce_ratio
    assert cc_ratio < 0.9 * ce_ratio
    assert min(center_acc, cc_acc) > ce_acc - 0.05
