"""BUDetector (MC-dropout uncertainty) against a direct numpy computation with its own dropout
masks; fixed vs fresh masks; gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustctl.data.base import ImageData
from robustctl.defenses.base import FitInputs, Probe
from robustctl.defenses.uncertainty import BUConfig, BUDetector
from robustctl.errors import ConfigError
from robustctl.inference import ModelOutputs
from robustctl.models import ResNet


def tiny_model(logit_sign: float = 1.0, num_classes: int = 4) -> ResNet:
    torch.manual_seed(0)
    return ResNet(
        depth=8, num_classes=num_classes, in_channels=1, width=2, logit_sign=logit_sign
    ).eval()


def fit_inputs(model: ResNet, n_val: int = 10) -> FitInputs:
    g = torch.Generator().manual_seed(5)
    k = model.num_classes

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, k, (n,), generator=g)

    (xt, yt), (xv, yv), (xs, ys) = split(12), split(n_val), split(4)
    data = ImageData("t", xt, yt, xv, yv, xs, ys, tuple(str(i) for i in range(k)))
    return FitInputs(model, data, ModelOutputs(model, data, 64))


def reference_u(z: np.ndarray, w: np.ndarray, b: np.ndarray, sign: float, keep: np.ndarray, p):
    """Feinman's U = (1/T) sum_t p_t.p_t - m.m, literally, with keep masks [T, D]."""
    probs = []
    for mask in keep:
        logits = sign * ((z * mask / (1 - p)) @ w.T + b)
        e = np.exp(logits - logits.max(1, keepdims=True))
        probs.append(e / e.sum(1, keepdims=True))
    probs = np.stack(probs)  # [T, N, K]
    m = probs.mean(0)
    return (probs * probs).sum(-1).mean(0) - (m * m).sum(-1)


@pytest.mark.parametrize("logit_sign,dropout", [(1.0, 0.5), (-1.0, 0.3)])
def test_matches_numpy_with_the_same_masks(logit_sign: float, dropout: float) -> None:
    model = tiny_model(logit_sign).double()
    det = BUDetector(samples=7, dropout=dropout).draw_masks(model.embedding_dim, 4)
    masks = det.masks.numpy()
    assert masks.shape == (7, 8) and set(np.unique(masks)) <= {0.0, 1.0}
    z = torch.randn(6, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 3
    probe = Probe.known(model, torch.zeros(6, 1, 8, 8), z, logit_sign * model.head(z))
    got = det.score_probe(probe, probe.predictions).detach().numpy()
    w, b = model.head.weight.detach().numpy(), model.head.bias.detach().numpy()
    want = reference_u(z.numpy(), w, b, logit_sign, masks, dropout)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-14)
    assert (want > 1e-4).all()  # not a trivially zero uncertainty
    # without the 1/(1-p) scaling the values would differ
    unscaled = reference_u(z.numpy(), w, b, logit_sign, masks * (1 - dropout), dropout)
    assert np.abs(unscaled - got).max() > 1e-3


def test_masks_drop_at_the_configured_rate_and_follow_the_seed() -> None:
    for p in (0.5, 0.2):
        det = BUDetector(samples=400, dropout=p).draw_masks(64, 3)
        dropped = 1.0 - float(det.masks.mean())
        assert abs(dropped - p) < 0.02  # 25 600 Bernoulli draws: ~7 standard deviations
    a = BUDetector(seed=3).draw_masks(16, 3).masks
    assert torch.equal(a, BUDetector(seed=3).draw_masks(16, 3).masks)
    assert not torch.equal(a, BUDetector(seed=4).draw_masks(16, 3).masks)
    assert a.shape == (50, 16)  # default T = 50


def test_fit_on_uses_the_model_and_reports_the_clean_validation_uncertainty() -> None:
    model = tiny_model()
    inputs = fit_inputs(model)
    det = BUDetector(samples=5).fit_on(inputs)
    assert det.masks.shape == (5, model.embedding_dim) and det.num_classes == 4
    with torch.no_grad():
        probe = Probe(model, inputs.data.x_val)
        scores = det.score_probe(probe, probe.predictions)
    metrics = det.metrics()
    assert metrics["bu/val_uncertainty"] == pytest.approx(float(scores.mean()), rel=1e-5)
    assert metrics["bu/samples"] == 5.0 and metrics["bu/dropout"] == 0.5
    assert "bu/val_uncertainty" not in BUDetector().fit_on(fit_inputs(model, 0)).metrics()


def test_fixed_masks_are_deterministic_and_batch_independent() -> None:
    model = tiny_model()
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    det = BUDetector(samples=9).draw_masks(model.embedding_dim, 4)
    with torch.no_grad():
        probe = Probe(model, x)
        first = det.score_probe(probe, probe.predictions)
        second = det.score_probe(probe, probe.predictions)
        again = BUDetector(samples=9).draw_masks(model.embedding_dim, 4).score_probe(probe, None)
        one_by_one = torch.cat(
            [det.score_probe(Probe(model, x[i : i + 1]), None) for i in range(6)]
        )
    assert torch.equal(first, second) and torch.equal(first, again)
    torch.testing.assert_close(one_by_one, first, rtol=1e-5, atol=1e-7)
    assert len(torch.unique(first)) == 6


def test_fresh_masks_change_every_call_and_per_image() -> None:
    model = tiny_model()
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    det = BUDetector(samples=9, fixed_masks=False).draw_masks(model.embedding_dim, 4)
    with torch.no_grad():
        probe = Probe(model, torch.cat([x, x]))  # every image twice in one call
        first = det.score_probe(probe, None)
        second = det.score_probe(probe, None)
    assert (first != second).all()
    assert (first[:4] != first[4:]).all()  # the same image draws its own masks
    fixed = BUDetector(samples=9).draw_masks(model.embedding_dim, 4).score_probe(probe, None)
    assert torch.equal(fixed[:4], fixed[4:])


def test_gradient_reaches_the_images_and_gradcheck() -> None:
    model = tiny_model()
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(3)).requires_grad_(True)
    det = BUDetector(samples=10).draw_masks(model.embedding_dim, 4)
    probe = Probe(model, x)
    det.score_probe(probe, probe.predictions).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    m64 = tiny_model().double()
    z = torch.randn(3, 8, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda v: det.uncertainty_of(v, m64.head, m64.logit_sign), (z.requires_grad_(True),)
    )


def test_state_dict_config_and_errors() -> None:
    model = tiny_model()
    det = BUDetector(samples=6, dropout=0.4).draw_masks(model.embedding_dim, 4)
    fresh = BUDetector(samples=6, dropout=0.4)
    fresh.load_state_dict(det.state_dict())
    z = torch.randn(3, 8)
    probe = Probe.known(model, torch.zeros(3, 1, 8, 8), z, model.head(z))
    assert torch.equal(fresh.score_probe(probe, None), det.score_probe(probe, None))
    cfg = BUConfig()
    assert (cfg.name, cfg.dropout, cfg.samples, cfg.fixed_masks, cfg.seed) == (
        "bu",
        0.5,
        50,
        True,
        0,
    )
    assert BUDetector.config_type is BUConfig and BUDetector.layers == ()
    assert not BUDetector.reads_images
    for bad in ({"dropout": 0.0}, {"dropout": 1.0}, {"samples": 1}):
        with pytest.raises(ConfigError, match=r"defense\.(dropout|samples)"):
            BUConfig(**bad)
    with pytest.raises(RuntimeError, match="not fitted"):
        BUDetector().score_probe(probe, None)
    with pytest.raises(ValueError, match="shape"):
        BUDetector().draw_masks(5, 4).score_probe(probe, None)


def test_the_attack_bound_is_the_distance_from_a_certain_target_prediction() -> None:
    """What C&W-wb lowers against BU: (1/T) sum_t ||p_t - e_t||^2 for the target class t, by
    numpy with the same masks; never below U; 0 only for certain dropout predictions."""
    model = tiny_model().double()
    det = BUDetector(samples=6).draw_masks(model.embedding_dim, 4)
    z = torch.randn(5, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 3
    probe = Probe.known(model, torch.zeros(5, 1, 8, 8), z, model.head(z))
    w, b = model.head.weight.detach().numpy(), model.head.bias.detach().numpy()
    score = det.score_probe(probe, probe.predictions)
    for target in range(4):
        toward = torch.full((5,), target)
        bound = det.score_bound(probe, toward).detach().numpy()
        want = np.zeros(5)
        for mask in det.masks.numpy():
            logits = (z.numpy() * mask / 0.5) @ w.T + b
            e = np.exp(logits - logits.max(1, keepdims=True))
            p = e / e.sum(1, keepdims=True)
            want += ((p - np.eye(4)[target]) ** 2).sum(1) / 6
        np.testing.assert_allclose(bound, want, rtol=1e-9)
        assert (bound >= score.detach().numpy() - 1e-12).all()
