"""JSMA: success with a full budget, the gamma budget, the pair search and its memory chunking."""

from __future__ import annotations

import itertools

import torch

from robustctl.attacks import JSMA
from robustctl.models import ResNet


def test_jsma_reaches_random_targets_on_a_small_input(trained, reference):
    result = JSMA(trained.model, gamma=1.0)(trained.x, trained.y)
    assert (result.target != trained.y).all()
    # success judged by the never-attacked reference copy, not by the attack's own pred
    with torch.no_grad():
        reached = reference.predict_logits(result.x_adv).argmax(1) == result.target
    assert reached.float().mean() >= 0.9
    assert torch.equal(result.success, reached)


def test_gamma_bounds_the_changed_features_and_theta_sets_them(trained):
    # n = 64 features, gamma 0.1: floor(6.4 / 2) = 3 iterations, at most 6 changed values, each
    # set to 1
    result = JSMA(trained.model)(trained.x, trained.y)
    changed = (result.x_adv != trained.x).flatten(1)
    assert changed.sum(1).max() <= 6 and changed.any()
    assert (result.x_adv.flatten(1)[changed] == 1).all()
    decrease = JSMA(trained.model, theta=-1.0, steps=2)(trained.x, trained.y)
    moved = (decrease.x_adv != trained.x).flatten(1)
    assert moved.sum(1).max() <= 4 and (decrease.x_adv.flatten(1)[moved] == 0).all()


def brute_force_pairs(alpha, beta, domain):
    out = []
    for a, b, d in zip(alpha.tolist(), beta.tolist(), domain.tolist(), strict=True):
        best, pair = float("-inf"), None
        for p, q in itertools.combinations(range(len(a)), 2):
            sa, sb = a[p] + a[q], b[p] + b[q]
            if d[p] and d[q] and sa > 0 and sb < 0 and -sa * sb > best:
                best, pair = -sa * sb, (p, q)
        out.append(pair)
    return out


def test_pair_search_matches_brute_force_for_every_chunk_size():
    g = torch.Generator().manual_seed(1)
    alpha, beta = torch.randn(6, 13, generator=g), torch.randn(6, 13, generator=g)
    domain = torch.rand(6, 13, generator=g) > 0.3
    domain[5] = False  # an example with nothing left
    expected = brute_force_pairs(alpha, beta, domain)
    for chunk in (1, 7, 50, 10_000):
        attack = JSMA(torch.nn.Identity(), max_pair_chunk=chunk)
        p, q, found = attack.saliency_pairs(alpha, beta, domain)
        got = [(int(a), int(b)) if f else None for a, b, f in zip(p, q, found, strict=True)]
        assert got == expected, chunk


def test_chunked_search_gives_identical_adversarials(trained):
    x, y = trained.x[:12], trained.y[:12]
    whole = JSMA(trained.model, steps=6, gamma=1.0)(x, y)
    chunked = JSMA(trained.model, steps=6, gamma=1.0, max_pair_chunk=97)(x, y)
    assert torch.equal(whole.x_adv, chunked.x_adv)


def test_runs_on_cifar_shaped_inputs_with_bounded_chunks():
    torch.manual_seed(0)
    model = ResNet(depth=8, num_classes=10, in_channels=3, width=4).eval()
    x = torch.rand(3, 3, 32, 32)
    y = torch.zeros(3, dtype=torch.long)
    result = JSMA(model, steps=2, max_pair_chunk=2**18)(x, y)  # 9.4M pairs per image, 2**18 at once
    changed = (result.x_adv != x).flatten(1).sum(1)
    assert result.x_adv.shape == x.shape and changed.max() <= 4
    assert result.x_adv.min() >= 0 and result.x_adv.max() <= 1
