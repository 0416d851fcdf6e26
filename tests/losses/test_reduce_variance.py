"""Reduce-variance loss (raw, centroid-normalized, unit-normalized) against hand arithmetic."""

from __future__ import annotations

import pytest
import torch

from robustctl.losses.reduce_variance import ReduceVarianceLoss, reduce_variance_loss

# class 0: (0,0), (2,0): mu = (1,0), sigma = (1 + 1) / 2 = 1
# class 2: (0,1), (0,3), (0,5): mu = (0,3), sigma = (4 + 0 + 4) / 3 = 8/3
# class 1 is absent and must not count: RVL = (1 + 8/3) / 2 = 11/6
Z = torch.tensor([[0.0, 0.0], [0.0, 1.0], [2.0, 0.0], [0.0, 3.0], [0.0, 5.0]])
Y = torch.tensor([0, 2, 0, 2, 2])


@pytest.mark.parametrize("num_classes", [None, 3, 5])
def test_raw_rvl_by_hand(num_classes):
    assert reduce_variance_loss(Z, Y, "raw", num_classes).item() == pytest.approx(11 / 6, rel=1e-6)


def test_centroid_rvl_by_hand():
    # centroid distance ||(1,0) - (0,3)||^2 = 1 + 9 = 10 -> (11/6) / 10
    assert reduce_variance_loss(Z, Y, "centroid", 3).item() == pytest.approx(11 / 60, rel=1e-6)
    # it is scale-invariant, unlike the raw RVL
    assert reduce_variance_loss(5 * Z, Y, "centroid").item() == pytest.approx(11 / 60, rel=1e-5)
    assert reduce_variance_loss(5 * Z, Y, "raw").item() == pytest.approx(25 * 11 / 6, rel=1e-6)


def test_unit_rvl_by_hand():
    z = torch.tensor([[2.0, 0.0], [0.0, 3.0], [0.0, 5.0], [0.0, 1.0]])
    y = torch.tensor([0, 0, 1, 1])
    # normalized: class 0 = (1,0), (0,1): mu = (.5,.5), sigma = .5; class 1 = (0,1) twice: sigma = 0
    assert reduce_variance_loss(z, y, "unit").item() == pytest.approx(0.25, rel=1e-6)
    # raw: class 0 mu = (1, 1.5), sigma = 3.25; class 1 mu = (0, 3), sigma = 4
    assert ReduceVarianceLoss("raw")(z, y).item() == pytest.approx(3.625, rel=1e-6)


def test_one_class_batch():
    z = torch.tensor([[1.0, 0.0], [3.0, 0.0]])
    y = torch.tensor([1, 1])
    assert reduce_variance_loss(z, y).item() == pytest.approx(1.0)
    assert reduce_variance_loss(z, y, "centroid", 2).item() == 0.0  # no distance to divide by


def test_rvl_gradient_pulls_samples_to_their_class_mean():
    z = Z.clone().requires_grad_(True)
    reduce_variance_loss(z, Y).backward()
    # d sigma_c / d z_i = 2 (z_i - mu_c) / N_c, averaged over 2 classes
    expected = torch.stack(
        [2 * (Z[i] - (Z[Y == Y[i]].mean(0))) / (Y == Y[i]).sum() / 2 for i in range(5)]
    )
    assert torch.allclose(z.grad, expected, atol=1e-6)


def test_unknown_normalization_is_refused():
    with pytest.raises(ValueError, match="normalization"):
        ReduceVarianceLoss("l1")
