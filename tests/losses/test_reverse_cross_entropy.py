"""Reverse cross-entropy against values worked out by hand, and an RCE-trained model's negation."""

from __future__ import annotations

import math

import pytest
import torch

from robustctl.losses.reverse_cross_entropy import (
    ReverseCrossEntropy,
    reverse_cross_entropy,
    reverse_labels,
)
from robustctl.models.base import ModelOutput


def test_reverse_labels_by_hand():
    r = reverse_labels(torch.tensor([1, 3]), 4)
    third = 1.0 / 3.0
    expected = torch.tensor([[third, 0.0, third, third], [third, third, third, 0.0]])
    assert torch.allclose(r, expected)


def test_rce_values_by_hand():
    # row 1: Z = (1, 2, 3), y = 0, K = 3: R = (0, 1/2, 1/2), log p_j = Z_j - log(e + e^2 + e^3)
    lse = math.log(math.e + math.e**2 + math.e**3)
    row1 = -(0.5 * (2 - lse) + 0.5 * (3 - lse))  # = lse - 2.5 = 0.9076...
    # row 2: Z = (0, 0, 5), y = 2: R = (1/2, 1/2, 0), log p_0 = log p_1 = -log(2 + e^5)
    row2 = math.log(2 + math.e**5)
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 5.0]])
    labels = torch.tensor([0, 2])
    got = reverse_cross_entropy(logits, labels)
    assert got.tolist() == pytest.approx([row1, row2], rel=1e-6)
    assert row1 == pytest.approx(0.907606, abs=1e-6)


def test_rce_module_averages_weights_and_classifies_partners():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0]])  # uniform p: RCE = -(3 * 1/3 * log 1/4) = log 4
    out = ModelOutput(logits, torch.zeros(1, 2))
    loss = ReverseCrossEntropy(weight=0.5)
    value = loss(out, torch.tensor([2]))
    assert value.total.item() == pytest.approx(0.5 * math.log(4))
    assert set(value.terms) == {"rce"}
    assert ReverseCrossEntropy.logit_sign == -1.0


def test_rce_is_minimal_when_the_true_class_is_least_likely():
    labels = torch.tensor([0])
    low_true = reverse_cross_entropy(torch.tensor([[-10.0, 1.0, 1.0]]), labels)
    high_true = reverse_cross_entropy(torch.tensor([[5.0, 1.0, 1.0]]), labels)
    assert low_true < high_true
    assert low_true.item() == pytest.approx(math.log(2), abs=1e-3)  # entropy of R = log(K - 1)
