"""KDEDetector against hand computations, a float64 reference and scikit-learn's KernelDensity.

Bandwidth conversion used throughout: our kernel exp(-||d||^2 / sigma^2) is scikit-learn's Gaussian
kernel exp(-||d||^2 / (2 h^2)) with h = sigma / sqrt(2). sklearn's ``score_samples`` is normalized:
sklearn = log_density - (D/2) log(2 pi h^2) = log_density - D log(sigma) - (D/2) log(pi)
= ``log_density(..., normalized=True)``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.neighbors import KernelDensity

from robustctl.defenses import KDEDetector, threshold_at
from robustctl.defenses import kde as kde_module


def ref_log_kde(q: np.ndarray, pts: np.ndarray, sigma: float) -> np.ndarray:
    """Independent float64 reference: log (1/n) sum_j exp(-||q - p_j||^2 / sigma^2), direct
    differences."""
    a = -((q[:, None, :] - pts[None, :, :]) ** 2).sum(-1) / sigma**2
    top = a.max(1, keepdims=True)
    return top[:, 0] + np.log(np.exp(a - top).sum(1)) - np.log(pts.shape[0])


def blobs(
    k: int, n: int, d: int, sep: float = 4.0, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """k Gaussian classes of n points in d dims (float64); same class means for every seed."""
    mu = (
        torch.randn(k, d, generator=torch.Generator().manual_seed(12345), dtype=torch.float64) * sep
    )
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(k).repeat_interleave(n)
    return mu[y] + torch.randn(k * n, d, generator=g, dtype=torch.float64), y


def class_points(det: KDEDetector, cls: int) -> np.ndarray:
    k = det.classes.tolist().index(cls)
    start = int(det.counts[:k].sum())
    return det.points[start : start + int(det.counts[k])].double().cpu().numpy()


def zeros(n: int) -> torch.Tensor:
    return torch.zeros(n, dtype=torch.long)


# ----------------------------------------------------------------------------------- exact values
def test_hand_computed_three_points() -> None:
    pts = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    det = KDEDetector(bandwidth=1.0).fit(pts, zeros(3))
    q = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    got = det.log_density(q, zeros(2))
    # (0,1): squared distances 1, 2, 1;  (1,0): 1, 0, 5
    want = torch.tensor(
        [
            math.log((2 * math.exp(-1) + math.exp(-2)) / 3),
            math.log((1 + math.exp(-1) + math.exp(-5)) / 3),
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    torch.testing.assert_close(det.score(q, zeros(2)), -want, rtol=0, atol=1e-12)
    torch.testing.assert_close(det(q, zeros(2)), -want, rtol=0, atol=1e-12)
    # sigma = 2: the exponent is divided by sigma^2 = 4 (not 2 sigma^2, not sigma)
    got2 = float(det.log_density(q[:1], zeros(1), bandwidth=2.0))
    assert got2 == pytest.approx(math.log((2 * math.exp(-1 / 4) + math.exp(-2 / 4)) / 3), abs=1e-12)
    # normalized: minus D log(sigma) + (D/2) log(pi) with D = 2, sigma = 2
    got3 = float(det.log_density(q[:1], zeros(1), bandwidth=2.0, normalized=True))
    assert got3 == pytest.approx(got2 - 2 * math.log(2.0) - math.log(math.pi), abs=1e-12)


@pytest.mark.parametrize("dim,sigma", [(8, 3.0), (64, 8.0)])
def test_matches_sklearn_kernel_density(dim: int, sigma: float) -> None:
    # Moderate bandwidths only: where log densities fall far below ~-40 nats sklearn's tree
    # summation drifts by several nats (docs/method.md sections 5-6); the float64 reference covers
    # that range.
    z, y = blobs(3, 150, dim, seed=dim)
    det = KDEDetector(bandwidth=sigma).fit(z, y, per_class=100)
    q, qy = blobs(3, 40, dim, seed=dim + 1)
    qy = qy.flip(0)  # most rows scored under a class that is not their own
    ours = det.log_density(q, qy).numpy()
    ours_norm = det.log_density(q, qy, normalized=True).numpy()
    h = sigma / math.sqrt(2)
    sk = np.empty(len(qy))
    for c in range(3):
        rows = (qy == c).numpy()
        sk[rows] = (
            KernelDensity(kernel="gaussian", bandwidth=h)
            .fit(class_points(det, c))
            .score_samples(q[rows].numpy())
        )
    assert np.isfinite(sk).all() and np.ptp(sk) > 25  # a wide spread of values
    np.testing.assert_allclose(
        ours - (dim / 2) * math.log(2 * math.pi * h**2), sk, rtol=1e-9, atol=1e-6
    )
    np.testing.assert_allclose(ours_norm, sk, rtol=1e-9, atol=1e-6)


def test_float32_far_from_origin_stays_accurate() -> None:
    # A large common offset: the ||a||^2 + ||b||^2 - 2ab expansion in float32 without centring
    # loses whole nats here; the detector must stay near the float64 reference.
    z, y = blobs(2, 100, 64, seed=3)
    q, qy = blobs(2, 20, 64, seed=4)
    sigma = 2.0
    det = KDEDetector(bandwidth=sigma).fit((z + 300.0).float(), y)
    got = det.log_density((q + 300.0).float(), qy)
    assert got.dtype == torch.float32
    want = np.concatenate(
        [ref_log_kde(q[qy == c].numpy() + 300.0, class_points(det, c), sigma) for c in (0, 1)]
    )
    np.testing.assert_allclose(got.double().numpy(), want, rtol=1e-4, atol=0.05)


def test_small_sigma_64d_stays_finite_and_exact() -> None:
    z, y = blobs(2, 50, 64, seed=5)
    q, qy = blobs(2, 10, 64, seed=6)
    sigma = 0.25  # squared distances ~128 -> exponents ~-2000: exp underflows even in float64
    det = KDEDetector(bandwidth=sigma).fit(z, y)
    got = det.log_density(q, qy)
    naive = torch.log(
        torch.exp(-(torch.cdist(q, z) ** 2) / sigma**2)[y[None, :] == qy[:, None]]
        .view(20, 50)
        .mean(1)
    )
    assert torch.isinf(naive).all()  # the case really underflows
    want = np.concatenate(
        [ref_log_kde(q[qy == c].numpy(), class_points(det, c), sigma) for c in (0, 1)]
    )
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10, atol=1e-8)
    assert (got.numpy() < -500).all()


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 12),
    m=st.integers(1, 9),
    d=st.integers(1, 5),
    sigma=st.floats(0.05, 10.0),
    chunk=st.integers(1, 50),
    seed=st.integers(0, 10_000),
)
def test_property_matches_reference(
    n: int, m: int, d: int, sigma: float, chunk: int, seed: int
) -> None:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(2 * n, d, generator=g, dtype=torch.float64)
    y = torch.arange(2).repeat_interleave(n)
    q = torch.randn(m, d, generator=g, dtype=torch.float64) * 2
    qy = torch.randint(0, 2, (m,), generator=g)
    got = KDEDetector(bandwidth=sigma, chunk_size=chunk).fit(z, y).log_density(q, qy).numpy()
    for c in (0, 1):
        rows = (qy == c).numpy()
        if rows.any():
            np.testing.assert_allclose(
                got[rows],
                ref_log_kde(q[rows].numpy(), z[y == c].numpy(), sigma),
                rtol=1e-9,
                atol=1e-9,
            )


def test_scores_use_only_the_given_class_points_and_keep_row_order() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(30, 4, generator=g, dtype=torch.float64)  # label 3, near the origin
    b = torch.randn(20, 4, generator=g, dtype=torch.float64) + 6.0  # label 7, far away
    det = KDEDetector(bandwidth=1.0).fit(torch.cat([a, b]), torch.tensor([3] * 30 + [7] * 20))
    q = torch.cat([a[:5] + 0.1, b[:5] - 0.1])[torch.tensor([0, 5, 1, 6, 2, 7, 3, 8, 4, 9])]
    own, other = torch.tensor([3, 7] * 5), torch.tensor([7, 3] * 5)
    got_own, got_other = det.log_density(q, own), det.log_density(q, other)
    for i in range(10):
        for cls, got in ((int(own[i]), got_own), (int(other[i]), got_other)):
            want = ref_log_kde(q[i : i + 1].numpy(), (a if cls == 3 else b).numpy(), 1.0)[0]
            assert float(got[i]) == pytest.approx(want, abs=1e-9)
    assert (got_own - got_other > 20).all()  # a pooled KDE could not tell these apart


# --------------------------------------------------------------------------------- per class
def test_per_class_keeps_min_of_per_class_and_count_seeded() -> None:
    z, y = blobs(3, 20, 5, seed=1)
    keep = torch.cat(
        [torch.arange(0, 20), torch.arange(20, 25), torch.arange(40, 52)]
    )  # 20, 5, 12 samples
    z, y = z[keep], y[keep]
    det = KDEDetector(bandwidth=1.0).fit(
        z, y, per_class=7, generator=torch.Generator().manual_seed(11)
    )
    assert det.counts.tolist() == [7, 5, 7] and det.classes.tolist() == [0, 1, 2]
    assert det.points.shape == (19, 5)
    for c in range(3):
        pts = torch.as_tensor(class_points(det, c))
        match = (torch.cdist(pts, z[y == c]) < 1e-12).sum(
            1
        )  # each kept row is one distinct row of class c
        assert match.tolist() == [1] * len(pts) and len(torch.unique(pts, dim=0)) == len(pts)
    again = KDEDetector(bandwidth=1.0).fit(
        z, y, per_class=7, generator=torch.Generator().manual_seed(11)
    )
    assert torch.equal(again.points, det.points)
    other = KDEDetector(bandwidth=1.0).fit(
        z, y, per_class=7, generator=torch.Generator().manual_seed(12)
    )
    assert not torch.equal(other.points, det.points)
    default_a = KDEDetector(bandwidth=1.0).fit(z, y, per_class=7)
    default_b = KDEDetector(bandwidth=1.0).fit(z, y, per_class=7)
    assert torch.equal(default_a.points, default_b.points)  # generator=None is seeded too
    assert KDEDetector(bandwidth=1.0).fit(z, y).counts.tolist() == [20, 5, 12]  # default 1000


# --------------------------------------------------------------------------------- bandwidth
def test_auto_bandwidth_known_optimum() -> None:
    # One kernel point per class, every held-out point at distance r from it: the mean normalized
    # log-likelihood is -r^2/sigma^2 - D log(sigma) - (D/2) log(pi), maximal at sigma = r sqrt(2/D).
    dim, r = 4, 2.0
    centers = torch.tensor([[0.0] * dim, [10.0] * dim], dtype=torch.float64)
    eye = torch.eye(dim, dtype=torch.float64)
    held = torch.cat([centers[0] + r * eye, centers[0] - r * eye, centers[1] + r * eye])
    held_y = torch.tensor([0] * (2 * dim) + [1] * dim)
    best = r * math.sqrt(2 / dim)
    grid = [0.5, 1.0, best, 2.0, 4.0]
    det = KDEDetector(bandwidth_grid=grid).fit(
        centers, torch.tensor([0, 1]), held_out=(held, held_y)
    )
    assert det.bandwidth_ == pytest.approx(best)
    want = [-(r**2) / s**2 - dim * math.log(s) - dim / 2 * math.log(math.pi) for s in sorted(grid)]
    np.testing.assert_allclose(det.bandwidth_scores_, want, rtol=1e-12)
    assert det.metrics()["kde/bandwidth"] == pytest.approx(best)
    assert det.metrics()["kde/heldout_loglik"] == pytest.approx(max(want))


def mean_loglik(
    det: KDEDetector, held: torch.Tensor, hy: torch.Tensor, sigma: float, sklearn: bool = False
) -> float:
    """Mean normalized held-out log-likelihood by brute force: float64 reference or sklearn."""
    total, dim = 0.0, held.shape[1]
    for c in det.classes.tolist():
        rows, pts = (hy == c).numpy(), class_points(det, c)
        if sklearn:
            kde = KernelDensity(kernel="gaussian", bandwidth=sigma / math.sqrt(2)).fit(pts)
            total += kde.score_samples(held[rows].numpy()).sum()
        else:
            ref = (
                ref_log_kde(held[rows].numpy(), pts, sigma)
                - dim * math.log(sigma)
                - dim / 2 * math.log(math.pi)
            )
            total += ref.sum()
    return total / len(hy)


def test_auto_bandwidth_is_the_heldout_likelihood_maximizer() -> None:
    z, y = blobs(3, 200, 8, seed=7)
    held, hy = blobs(3, 60, 8, seed=8)
    grid = list(np.geomspace(0.1, 20.0, 15))
    det = KDEDetector(bandwidth_grid=grid).fit(z, y, per_class=200, held_out=(held, hy))
    brute = [mean_loglik(det, held, hy, s) for s in grid]
    best = int(np.argmax(brute))
    assert 0 < best < len(grid) - 1  # an interior optimum, so the test discriminates
    assert det.bandwidth_ == pytest.approx(grid[best])
    np.testing.assert_allclose(det.bandwidth_scores_, brute, rtol=1e-9)
    # sklearn agrees where its summation is exact (moderate densities, around the optimum)
    moderate = [i for i, b in enumerate(brute) if b > brute[best] - 6]
    assert best in moderate and len(moderate) >= 4
    sk = [mean_loglik(det, held, hy, grid[i], sklearn=True) for i in moderate]
    np.testing.assert_allclose([brute[i] for i in moderate], sk, rtol=1e-7)
    # Without the sigma^-D factor the likelihood only grows with sigma: the largest would win.
    unnorm = [float(det.log_density(held, hy, bandwidth=s).mean()) for s in grid]
    assert all(b > a for a, b in zip(unnorm[:-1], unnorm[1:], strict=True))


def test_auto_default_grid_follows_the_data_scale_and_internal_split() -> None:
    z, y = blobs(3, 200, 16, seed=9)
    held, hy = blobs(3, 60, 16, seed=10)
    z, held = z * 50.0, held * 50.0
    det = KDEDetector().fit(z, y, per_class=200, held_out=(held, hy))
    grid = det.bandwidth_grid_
    assert len(grid) == 31 and det.bandwidth_scores_ and len(det.bandwidth_scores_) == 31
    d = torch.cdist(z[y == 0], z[y == 0])
    med = float(d[d > 0].median())
    assert 0.0005 * med < grid[0] < 0.002 * med and 0.5 * med < grid[-1] < 2 * med
    brute = [mean_loglik(det, held, hy, s) for s in grid]
    assert 0 < int(np.argmax(brute)) < len(grid) - 1
    assert det.bandwidth_ == pytest.approx(grid[int(np.argmax(brute))])
    # held_out=None, classes with leftovers: the samples beyond per_class are held out
    z2, y2 = blobs(3, 400, 16, seed=9)
    a = KDEDetector().fit(z2 * 50.0, y2, per_class=200)
    assert a.bandwidth_ == KDEDetector().fit(z2 * 50.0, y2, per_class=200).bandwidth_
    assert 0.5 < a.bandwidth_ / det.bandwidth_ < 2.0
    # classes without leftovers: a seeded share of each class is held out; all points are kept
    c = KDEDetector().fit(z, y)
    assert c.counts.tolist() == [200, 200, 200] and 0.5 < c.bandwidth_ / det.bandwidth_ < 2.0


def test_edge_of_grid_warns_and_is_a_caveat() -> None:
    z, y = blobs(2, 50, 4, seed=2)
    with pytest.warns(RuntimeWarning, match="edge of the grid"):
        det = KDEDetector(bandwidth_grid=[100.0, 200.0, 400.0]).fit(z, y)
    # sigmas far too wide for unit blobs: the smallest wins, on the low edge
    assert det.bandwidth_ == 100.0
    (value, text) = det.caveats()["kde/bandwidth_at_grid_edge"]
    assert value == "low" and "grid_min" in text
    with pytest.warns(RuntimeWarning, match="edge of the grid"):
        high = KDEDetector(bandwidth_grid=[1e-4, 2e-4, 4e-4]).fit(z, y)
    assert high.caveats()["kde/bandwidth_at_grid_edge"][0] == "high"
    assert KDEDetector(bandwidth=1.0).fit(z, y).caveats() == {}


# ----------------------------------------------------------------------------- chunks, grads
def test_chunk_size_does_not_change_values_or_gradients() -> None:
    z, y = blobs(3, 40, 6, seed=12)
    q, qy = blobs(3, 11, 6, seed=13)
    outs, grads = [], []
    for chunk in (1, 7, 64, 10**9):
        det = KDEDetector(bandwidth=1.3, chunk_size=chunk).fit(z, y)
        qq = q.clone().requires_grad_(True)
        out = det.score(qq, qy)
        (g,) = torch.autograd.grad(out.square().sum(), qq)
        outs.append(out.detach())
        grads.append(g)
    for o, g in zip(outs[1:], grads[1:], strict=True):
        torch.testing.assert_close(o, outs[0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(g, grads[0], rtol=1e-10, atol=1e-12)


def test_blocks_never_exceed_chunk_size(monkeypatch: pytest.MonkeyPatch) -> None:
    # 20k kernel points in one class, chunk 2**14: no (query x point) block may be larger.
    g = torch.Generator().manual_seed(0)
    z = torch.randn(20_000, 8, generator=g)
    det = KDEDetector(bandwidth=2.0, chunk_size=2**14).fit(z, zeros(20_000), per_class=20_000)
    q = torch.randn(100, 8, generator=g, requires_grad=True)
    full = KDEDetector(bandwidth=2.0, chunk_size=10**9).fit(z, zeros(20_000), per_class=20_000)
    sizes: list[int] = []
    real_addmm = torch.addmm

    def spy(*args, **kwargs):
        out = real_addmm(*args, **kwargs)
        sizes.append(out.numel())
        return out

    monkeypatch.setattr(kde_module.torch, "addmm", spy)
    s = det.score(q, zeros(100))
    s.sum().backward()
    assert max(sizes) <= 2**14 and sum(sizes) >= 2 * 100 * 20_000  # forward + backward
    monkeypatch.undo()
    torch.testing.assert_close(s.detach(), full.score(q.detach(), zeros(100)), rtol=1e-5, atol=1e-4)


def test_gradcheck_float64() -> None:
    z, y = blobs(2, 5, 3, seed=14)
    det = KDEDetector(bandwidth=1.1, chunk_size=4).fit(z, y)
    q = (
        torch.randn(4, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64) + z[:4]
    ).requires_grad_(True)
    qy = torch.tensor([1, 0, 1, 0])
    assert torch.autograd.gradcheck(lambda x: det.log_density(x, qy), (q,))
    assert torch.autograd.gradgradcheck(lambda x: det.log_density(x, qy), (q,))


def test_gradient_finite_where_density_underflows_and_raises_density() -> None:
    z, y = blobs(2, 30, 64, seed=15)
    det = KDEDetector(bandwidth=0.3).fit(z.float(), y)
    q, qy = blobs(2, 4, 64, seed=16)
    q = q.float().requires_grad_(True)
    det.score(q, qy).sum().backward()
    assert torch.isfinite(q.grad).all() and q.grad.abs().sum() > 0
    with torch.no_grad():  # a small step against the score gradient lowers every score
        assert (det.score(q - 1e-3 * q.grad, qy) < det.score(q, qy)).all()


def test_backprop_to_images_through_a_resnet() -> None:
    from robustctl.models import ResNet

    torch.manual_seed(0)
    model = ResNet(depth=8, num_classes=3, in_channels=1, width=4).eval()
    x = torch.rand(12, 1, 8, 8)
    with torch.no_grad():
        z = model.embed(x)
    det = KDEDetector().fit(z, torch.arange(3).repeat(4))
    xa = x[:3].clone().requires_grad_(True)
    out = model(xa)
    det.score(out.embedding, out.logits.argmax(1)).sum().backward()
    assert torch.isfinite(xa.grad).all() and xa.grad.abs().sum() > 0


@pytest.mark.gpu
def test_cuda_matches_cpu() -> None:
    z, y = blobs(3, 100, 16, seed=20)
    q, qy = blobs(3, 30, 16, seed=21)
    det = KDEDetector().fit(z.float(), y)
    cpu = det.score(q.float(), qy)
    gpu = det.to("cuda").score(q.float(), qy)  # embeddings follow the points' device
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-3)


# ----------------------------------------------------------------------------- state, errors
def test_state_dict_roundtrip_and_dtype_move() -> None:
    z, y = blobs(3, 30, 4, seed=17)
    q, qy = blobs(3, 5, 4, seed=18)
    det = KDEDetector().fit(z.float(), y + 2, per_class=25)
    fresh = KDEDetector()
    fresh.load_state_dict(det.state_dict())
    assert fresh.bandwidth_ == pytest.approx(det.bandwidth_) and fresh.counts.tolist() == [
        25,
        25,
        25,
    ]
    torch.testing.assert_close(fresh.score(q.float(), qy + 2), det.score(q.float(), qy + 2))
    det64 = det.to(torch.float64)
    assert det64.points.dtype == torch.float64 and det64.score(q, qy + 2).dtype == torch.float64


def test_errors() -> None:
    z, y = blobs(2, 5, 3)
    with pytest.raises(ValueError, match="per_class"):
        KDEDetector(bandwidth=1.0).fit(z, y, per_class=0)
    for bad in ("scott", -1.0, 0.0, float("nan")):
        with pytest.raises(ValueError, match="bandwidth"):
            KDEDetector(bandwidth=bad)
    with pytest.raises(RuntimeError, match="not fitted"):
        KDEDetector().score(z, y)
    det = KDEDetector(bandwidth=1.0).fit(z, y)
    with pytest.raises(ValueError, match=r"classes \[5\] were not fitted"):
        det.score(z[:2], torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="shape"):
        det.score(z[:, :2], y)
    with pytest.raises(ValueError, match="NaN"):
        KDEDetector(bandwidth=1.0).fit(z * float("nan"), y)
    assert det.score(z[:0], y[:0]).shape == (0,)


def test_threshold_at() -> None:
    s = torch.arange(1, 101, dtype=torch.float32)[
        torch.randperm(100, generator=torch.Generator().manual_seed(0))
    ]
    t = KDEDetector.threshold_at(s, 0.05)
    assert t == 95.0 and int((s > t).sum()) == 5
    assert threshold_at(s, 0.0) == 100.0
    assert threshold_at(s, 1.0) == -math.inf
    assert int((s > threshold_at(s, 0.123)).sum()) == 12
    with pytest.raises(ValueError):
        threshold_at(s, 1.5)
