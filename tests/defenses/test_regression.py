"""The one logistic regression of the detectors (robustctl.defenses.regression): the Newton solver
against scikit-learn and its own optimality conditions, LogisticCombiner against scikit-learn on
StandardScaler features, its float64 buffers and its state_dict shape adoption."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from robustctl.defenses.regression import LogisticCombiner, fit_logistic_regression


def test_newton_solver_against_sklearn_and_its_optimality() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 3, generator=g, dtype=torch.float64)
    y = (
        x @ torch.tensor([1.5, -2.0, 0.0], dtype=torch.float64)
        + 0.3
        + torch.randn(300, generator=g, dtype=torch.float64)
        > 0
    ).double()
    for c in (0.01, 1.0, 1e4):
        w, b = fit_logistic_regression(x, y, c)
        sk = LogisticRegression(C=c, tol=1e-12, max_iter=10_000).fit(x.numpy(), y.numpy())
        np.testing.assert_allclose(w.numpy(), sk.coef_[0], rtol=1e-5, atol=1e-7)
        assert float(b) == pytest.approx(sk.intercept_[0], rel=1e-5, abs=1e-7)
        # stationarity of sum logloss + ||w||^2 / (2c): X^T (p - y) + w / c = 0, sum (p - y) = 0
        p = torch.sigmoid(x @ w + b)
        torch.testing.assert_close(
            x.T @ (p - y) + w / c, torch.zeros(3, dtype=torch.float64), atol=1e-7, rtol=0
        )
        assert abs(float((p - y).sum())) < 1e-7


def test_logistic_combiner_matches_sklearn() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(300, 3, generator=g, dtype=torch.float64) * torch.tensor([1.0, 5.0, 0.2])
    x = x + torch.tensor([2.0, -1.0, 10.0])
    y = (x[:, 0] + 0.3 * x[:, 1] + torch.randn(300, generator=g, dtype=torch.float64) > 1.5).long()
    lr = LogisticCombiner().fit(x, y, c=0.5)
    scaler = StandardScaler().fit(x.numpy())
    xs = scaler.transform(x.numpy())
    sk = LogisticRegression(C=0.5, tol=1e-12, max_iter=10_000).fit(xs, y.numpy())
    # float64 buffers: the fit's own numbers, as tight as the solver's test
    assert all(b.dtype == torch.float64 for b in (lr.mean, lr.scale, lr.weight, lr.bias))
    np.testing.assert_allclose(lr.mean.numpy(), scaler.mean_, rtol=1e-12)
    np.testing.assert_allclose(lr.scale.numpy(), scaler.scale_, rtol=1e-12)
    np.testing.assert_allclose(lr.weight.numpy(), sk.coef_[0], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(float(lr.bias), sk.intercept_[0], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(lr(x).numpy(), sk.decision_function(xs), rtol=1e-5, atol=1e-6)
    assert float(lr.train_accuracy) == pytest.approx(sk.score(xs, y.numpy()))
    assert float(lr.train_examples) == 300.0
    # the score is the logit in the caller's dtype: float32 features, float32 parameters
    x32 = x.float()
    got = lr(x32)
    assert got.dtype == torch.float32
    want = ((x32 - lr.mean.float()) / lr.scale.float()) @ lr.weight.float() + lr.bias.float()
    assert torch.equal(got, want)
    with pytest.raises(ValueError, match="labels 0 and 1"):
        LogisticCombiner().fit(x, torch.zeros(300))
    with pytest.raises(ValueError, match="NaN or inf"):
        LogisticCombiner().fit(torch.full((4, 2), float("nan")), torch.arange(4) % 2)


def test_a_constant_feature_gets_scale_one() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.cat([torch.randn(100, 1, generator=g), torch.full((100, 1), 3.0)], 1)
    lr = LogisticCombiner().fit(x, x[:, 0] > 0)
    assert float(lr.scale[1]) == 1.0 and float(lr.mean[1]) == 3.0
    assert torch.isfinite(lr(x)).all()


def test_separable_scores_rank_adversarial_above_clean() -> None:
    # per-layer scores: adversarial examples are further in two of three layers
    g = torch.Generator().manual_seed(4)

    def draw(n: int, adv: bool) -> torch.Tensor:
        s = torch.randn(n, 3, generator=g).abs() * 3
        return s + torch.tensor([4.0, 0.0, 2.5]) * adv

    clean, adv = draw(200, False), draw(200, True)
    lr = LogisticCombiner().fit(torch.cat([clean, adv]), torch.arange(400) >= 200)
    tc, ta = draw(200, False), draw(200, True)
    scores = lr(torch.cat([tc, ta]))
    auc = roc_auc_score(np.r_[np.zeros(200), np.ones(200)], scores.numpy())
    assert auc > 0.9
    assert lr.weight[0] > 0 and lr.weight[2] > 0 and abs(lr.weight[1]) < lr.weight[2]


def test_state_dict_adopts_the_fitted_shapes() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(50, 4, generator=g)
    lr = LogisticCombiner().fit(x, torch.arange(50) % 2, c=2.0)
    fresh = LogisticCombiner()
    assert not fresh.fitted
    fresh.load_state_dict(lr.state_dict())
    assert fresh.fitted and fresh.weight.shape == (4,) and fresh.weight.dtype == torch.float64
    assert torch.equal(fresh(x), lr(x))
    assert float(fresh.train_accuracy) == float(lr.train_accuracy)
