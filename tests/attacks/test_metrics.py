"""Distortion metrics (docs/metrics.md) against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from robustctl.attacks.metrics import DISTORTION_KEYS, distortion_metrics, per_example_distortions


def pair():
    x = torch.zeros(3, 1, 2, 2)  # n = 4 values per example
    x_adv = x.clone()
    x_adv[0, 0, 0] = torch.tensor([0.3, -0.4])  # ||d||_2 = 0.5, Linf 0.4, 2 of 4 changed
    x_adv[1, 0, 1, 1] = 1.0  # ||d||_2 = 1.0, Linf 1.0, 1 of 4 changed
    x_adv[2] = 0.5  # ||d||_2 = 1.0, Linf 0.5, 4 of 4 changed
    return x, x_adv


def test_per_example_values():
    x, x_adv = pair()
    per = per_example_distortions(x, x_adv)
    assert per["l2"].tolist() == pytest.approx([0.5, 1.0, 1.0])
    assert per["distortion"].tolist() == pytest.approx([0.25, 0.5, 0.5])  # L2 / sqrt(4)
    assert per["linf"].tolist() == pytest.approx([0.4, 1.0, 0.5])
    assert per["l0"].tolist() == pytest.approx([0.5, 0.25, 1.0])


def test_means_over_the_masked_examples_only():
    x, x_adv = pair()
    got = distortion_metrics(x, x_adv, torch.tensor([True, False, True]))
    assert set(got) == set(DISTORTION_KEYS)
    assert got["l2"] == pytest.approx(0.75)
    assert got["distortion"] == pytest.approx(0.375)
    assert got["linf"] == pytest.approx(0.45)
    assert got["l0"] == pytest.approx(0.75)
    assert distortion_metrics(x, x_adv)["l2"] == pytest.approx(2.5 / 3)


def test_no_adversarial_example_gives_nan():
    x, x_adv = pair()
    assert all(
        math.isnan(v)
        for v in distortion_metrics(x, x_adv, torch.zeros(3, dtype=torch.bool)).values()
    )


def test_round_off_below_tolerance_is_not_a_change():
    x = torch.full((1, 3, 4, 4), 0.5)
    assert per_example_distortions(x, x + 1e-7)["l0"].item() == 0.0
    assert per_example_distortions(x, x + 1e-7, l0_tol=0.0)["l0"].item() == 1.0


def test_normalized_distortion_of_a_uniform_shift_is_the_shift():
    x = torch.rand(2, 3, 8, 8) * 0.5
    assert distortion_metrics(x, x + 0.1)["distortion"] == pytest.approx(0.1, rel=1e-5)
