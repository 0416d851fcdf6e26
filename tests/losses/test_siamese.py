"""Siamese cosine loss against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from robustctl.losses.siamese import SiameseCosineLoss, siamese_cosine_loss


def test_siamese_values_by_hand():
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [3.0, 4.0]])
    zp = torch.tensor([[0.0, 2.0], [1.0, 1.0], [-3.0, -4.0]])
    same = torch.tensor([0.0, 1.0, 0.0])
    # cos = 0, 1/sqrt(2), -1 -> |0 - 0| + |1/sqrt(2) - 1| + |-1 - 0|
    expected = (0.0 + (1.0 - 1.0 / math.sqrt(2.0)) + 1.0) / 3.0
    assert siamese_cosine_loss(z, zp, same).item() == pytest.approx(expected, rel=1e-6)
    assert SiameseCosineLoss()(z, zp, same).item() == pytest.approx(expected, rel=1e-6)


def test_siamese_is_scale_free_and_zero_at_its_targets():
    z = torch.tensor([[1.0, 2.0], [0.0, 1.0]])
    zp = torch.tensor([[2.0, 4.0], [7.0, 0.0]])  # parallel (same class), orthogonal (other class)
    same = torch.tensor([1.0, 0.0])
    assert siamese_cosine_loss(z, zp, same).item() == pytest.approx(0.0, abs=1e-7)
    assert siamese_cosine_loss(10 * z, 0.1 * zp, same).item() == pytest.approx(0.0, abs=1e-7)
    assert siamese_cosine_loss(z, zp, 1 - same).item() == pytest.approx(1.0, abs=1e-6)
