"""PairSampler: same-class rate = Q (binomial tolerance), never self, labels consistent with the
targets, uniform over the allowed partners, reproducible from the generator."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from robustctl.losses.pairs import PairSampler

# imbalanced classes, one of them a singleton (it can have no same-class partner)
SIZES = [500, 300, 150, 49, 1]
LABELS = torch.cat([torch.full((n,), c) for c, n in enumerate(SIZES)])[
    torch.randperm(1000, generator=torch.Generator().manual_seed(1))
]


def draw(
    sampler: PairSampler, repeats: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    idx = torch.arange(len(sampler.labels)).repeat(repeats)
    partner, same = sampler.sample(idx, g)
    return idx, partner, same


@pytest.mark.parametrize("q", [0.5, 0.3, 0.9])
def test_same_class_rate_matches_q(q):
    sampler = PairSampler(LABELS, q=q)
    idx, partner, same = draw(sampler, 20)
    eligible = LABELS[idx] != 4  # every class but the singleton
    n = int(eligible.sum())
    rate = same[eligible].mean().item()
    assert abs(rate - q) < 4 * math.sqrt(q * (1 - q) / n)


def test_never_self_and_targets_match_labels():
    sampler = PairSampler(LABELS, q=0.5)
    idx, partner, same = draw(sampler, 20)
    assert not (partner == idx).any()
    assert torch.equal(same.bool(), LABELS[partner] == LABELS[idx])
    singleton = LABELS[idx] == 4
    assert not same[singleton].any()  # falls back to another class
    assert partner.min() >= 0 and partner.max() < len(LABELS)


@pytest.mark.parametrize("q, expected", [(0.0, 0.0), (1.0, 1.0)])
def test_extreme_q(q, expected):
    sampler = PairSampler(LABELS, q=q)
    idx, _, same = draw(sampler, 3)
    assert same[LABELS[idx] != 4].float().mean().item() == expected


def test_same_class_partners_are_uniform_over_the_other_members():
    labels = torch.tensor([0, 1, 0, 1, 0, 2])  # class 0 = {0, 2, 4}
    sampler = PairSampler(labels, q=1.0)
    partner, _ = sampler.sample(torch.full((6000,), 2), torch.Generator().manual_seed(0))
    counts = torch.bincount(partner, minlength=6)
    assert counts[2] == 0 and counts[[1, 3, 5]].sum() == 0
    assert abs(counts[0].item() - 3000) < 4 * math.sqrt(6000 * 0.25)


def test_other_class_is_uniform_over_classes_then_samples():
    """PDM Algorithm 1: a random other class, then a random sample of it, so classes of 300, 150,
    49 and 1 samples are each drawn a quarter of the time (a uniform draw over the other samples
    would give 0.6, 0.3, 0.098, 0.002)."""
    sampler = PairSampler(LABELS, q=0.0)
    idx = torch.nonzero(LABELS == 0).flatten().repeat(40)  # 20000 draws from class 0
    partner, _ = sampler.sample(idx, torch.Generator().manual_seed(0))
    freq = torch.bincount(LABELS[partner], minlength=5).double() / len(idx)
    expected = torch.tensor([0, 0.25, 0.25, 0.25, 0.25], dtype=torch.float64)
    assert torch.allclose(freq, expected, atol=4 * math.sqrt(0.25 * 0.75 / len(idx)))
    assert freq[0] == 0
    # within a class, every member equally likely: class 2's 150 members, ~33 draws each
    members = partner[LABELS[partner] == 2]
    counts = torch.bincount(members, minlength=len(LABELS))[LABELS == 2].double()
    mean = len(members) / 150
    assert counts.min() > 0 and ((counts - mean) ** 2 / mean).sum() < 150 + 4 * math.sqrt(300)


def test_reproducible_from_the_generator():
    sampler = PairSampler(LABELS)
    a, b, c = draw(sampler, 1, seed=7), draw(sampler, 1, seed=7), draw(sampler, 1, seed=8)
    assert torch.equal(a[1], b[1]) and torch.equal(a[2], b[2])
    assert not torch.equal(a[1], c[1])


def test_refuses_a_single_class_and_bad_q():
    with pytest.raises(ValueError, match="two classes"):
        PairSampler(torch.zeros(10, dtype=torch.long))
    with pytest.raises(ValueError, match="q"):
        PairSampler(LABELS, q=1.5)


@settings(max_examples=60, deadline=None)
@given(
    labels=st.lists(st.integers(0, 4), min_size=2, max_size=40),
    q=st.floats(0, 1),
    seed=st.integers(0, 2**31),
)
def test_property_partners_are_valid(labels, q, seed):
    y = torch.tensor(labels)
    if len(y.unique()) < 2:
        return
    sampler = PairSampler(y, q=q)
    idx = torch.arange(len(y)).repeat(3)
    partner, same = sampler.sample(idx, torch.Generator().manual_seed(seed))
    assert not (partner == idx).any()
    assert ((partner >= 0) & (partner < len(y))).all()
    assert torch.equal(same.bool(), y[partner] == y[idx])
