"""MahalanobisDetector against scikit-learn's EmpiricalCovariance, a direct computation of the
preprocessing step and finite differences (gradcheck); end to end through FitInputs with a tiny
ResNet and an FGSM written here. The layer combination's regression is tested against
scikit-learn in tests/defenses/test_regression.py; the config checks and the state_dict round
trip shared with LID in tests/defenses/test_adversarial_fit.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.covariance import EmpiricalCovariance

from robustctl.data.base import ImageData
from robustctl.defenses.base import FitInputs, Probe, score_images
from robustctl.defenses.mahalanobis import MahalanobisConfig, MahalanobisDetector
from robustctl.errors import ConfigError
from robustctl.inference import ModelOutputs, predict_labels
from robustctl.models import ResNet


# ------------------------------------------------------------------------------------ helpers
def features(n: int = 150, d: int = 5, k: int = 3, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """k classes with distinct means and a shared, correlated (non-identity) covariance."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(k).repeat_interleave(n // k)
    mix = torch.randn(d, d, generator=g, dtype=torch.float64)
    mu = 3.0 * torch.randn(k, d, generator=g, dtype=torch.float64)
    f = mu[y] + torch.randn(len(y), d, generator=g, dtype=torch.float64) @ mix
    return f, y


def fgsm_craft(model: torch.nn.Module):
    """(attack, params, x, y) -> x_adv: one signed-gradient step on the cross-entropy."""

    def craft(attack: str, params: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        assert attack == "fgsm"
        xr = x.clone().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(model.predict_logits(xr), y)
        (g,) = torch.autograd.grad(loss, xr)
        return (x + params["eps"] * g.sign()).clamp(0, 1).detach()

    return craft


def tiny_inputs(
    n_train: int = 90, seed: int = 0, dtype: torch.dtype = torch.float32
) -> tuple[ResNet, FitInputs]:
    """A depth-8 ResNet (untrained, eval mode) on random 8x8 one-channel images, 3 classes."""
    torch.manual_seed(seed)
    model = ResNet(depth=8, num_classes=3, in_channels=1, width=4).eval().to(dtype)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.rand(n_train + 30, 1, 8, 8, generator=g, dtype=dtype)
    y = torch.arange(len(x)) % 3
    data = ImageData(
        "tiny", x[:n_train], y[:n_train], x[n_train:], y[n_train:], x[:0], y[:0], ("a", "b", "c")
    )
    inputs = FitInputs(
        model,
        data,
        ModelOutputs(model, data, 128),
        batch_size=128,
        generator=torch.Generator().manual_seed(7),
        craft=fgsm_craft(model),
    )
    return model, inputs


def sklearn_min_distance(f: np.ndarray, y: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Lee et al.'s score by scikit-learn: tied covariance of the class-centred features,
    squared Mahalanobis distance to each class mean, minimum over classes."""
    mu = np.stack([f[y == c].mean(0) for c in np.unique(y)])
    cov = EmpiricalCovariance(assume_centered=True).fit(f - mu[y])
    return np.stack([cov.mahalanobis(q - m) for m in mu], 1).min(1)


# ---------------------------------------------------------------------------- fitting, scores
def test_distance_matches_sklearn() -> None:
    f, y = features()
    q, _ = features(n=30, seed=1)
    det = MahalanobisDetector().fit_features({"embedding": f}, y)
    got = det.distance(q, "embedding")
    want = sklearn_min_distance(f.numpy(), y.numpy(), q.numpy())
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-9)
    # the minimum is over classes, not under the given class: score_probe ignores ``classes``
    probe = Probe.known(None, q, q, torch.zeros(len(q), 3))  # type: ignore[arg-type]
    for classes in (torch.zeros(30, dtype=torch.long), torch.full((30,), 2)):
        torch.testing.assert_close(det.score_probe(probe, classes), got)
    assert det.caveats() == {}
    assert det.metrics() == {"mahalanobis/layers": 1.0, "mahalanobis/noise": 0.0}


def test_the_attack_surrogate_is_the_distance_to_the_target_class() -> None:
    """What C&W-wb minimizes: the distance to the class it moves toward (scikit-learn's, for that
    class), never below the detector's closest-class score, equal to it at the closest class."""
    f, y = features()
    q, _ = features(n=30, seed=1)
    det = MahalanobisDetector().fit_features({"embedding": f}, y)
    probe = Probe.known(None, q, q, torch.zeros(len(q), 3))  # type: ignore[arg-type]
    mu = np.stack([f.numpy()[y.numpy() == c].mean(0) for c in range(3)])
    cov = EmpiricalCovariance(assume_centered=True).fit(f.numpy() - mu[y.numpy()])
    per_class = np.stack([cov.mahalanobis(q.numpy() - m) for m in mu], 1)
    score = det.score_probe(probe, torch.zeros(30, dtype=torch.long))
    for target in range(3):
        toward = torch.full((30,), target)
        surrogate = det.attack_score(probe, toward)
        np.testing.assert_allclose(surrogate.numpy(), per_class[:, target], rtol=1e-9)
        assert (surrogate >= score - 1e-9).all()
    closest = torch.from_numpy(per_class.argmin(1))
    torch.testing.assert_close(det.attack_score(probe, closest), score)


def test_rank_deficient_covariance_uses_the_pseudo_inverse() -> None:
    f, y = features(d=4)
    f = torch.cat([f, f[:, :2].sum(1, keepdim=True), torch.zeros(len(f), 1)], 1)  # rank 4 of 6
    q, _ = features(n=30, d=4, seed=1)
    q = torch.cat([q, q[:, :2].sum(1, keepdim=True), torch.zeros(len(q), 1)], 1)
    det = MahalanobisDetector().fit_features({"embedding": f}, y)
    # sklearn's EmpiricalCovariance.precision_ is the pseudo-inverse (pinvh) as well
    want = sklearn_min_distance(f.numpy(), y.numpy(), q.numpy())
    np.testing.assert_allclose(det.distance(q, "embedding").numpy(), want, rtol=1e-6)
    assert torch.isfinite(det.precision("embedding")).all()
    value, text = det.caveats()["mahalanobis/rank_deficient_covariance"]
    assert value == "embedding" and "(4/6)" in text


def test_preprocessing_is_the_sign_step_and_bpda_gradient() -> None:
    model, inputs = tiny_inputs(dtype=torch.float64)
    layers = ["stage2", "embedding"]
    det = MahalanobisDetector(layers=layers, noise=0.01)
    det.fit_features(inputs.layers("train", tuple(layers)), inputs.data.y_train)
    x = inputs.data.x_val[:6]
    means = {n: det.means(n).numpy() for n in layers}
    precs = {n: det.precision(n).numpy() for n in layers}

    def direct_m(xx: torch.Tensor, name: str) -> torch.Tensor:
        """M^l by an explicit loop over classes (own code, not the detector's)."""
        f = model.layer_outputs(xx, (name,))[name]
        per_class = []
        for mu in means[name]:
            d = f - torch.from_numpy(mu)
            per_class.append(torch.einsum("ni,ij,nj->n", d, torch.from_numpy(precs[name]), d))
        return torch.stack(per_class, 1).min(1).values

    with torch.no_grad():  # the sign is computed even when the caller disables gradients
        x_hats = det.preprocessed(model, x)
    for name in layers:
        xr = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(direct_m(xr, name).sum(), xr)
        want = (x - 0.01 * torch.where(g >= 0, 1.0, -1.0).double()).clamp(0, 1)  # sign(0) = 1
        assert (g != 0).float().mean() > 0.9  # the step is not vacuous
        torch.testing.assert_close(x_hats[name], want, rtol=0, atol=1e-15)
        assert not x_hats[name].requires_grad
    # scored at x_hat, one column per layer; preprocessing lowers the (clean) distances
    probe = Probe(model, x, det.layers)
    cols = det.layer_scores(probe)
    for j, name in enumerate(layers):
        torch.testing.assert_close(cols[:, j], direct_m(x_hats[name], name))
        assert (cols[:, j] < direct_m(x, name).detach()).all()
    # BPDA: the gradient of the score in x is the gradient of M^l at x_hat (step held constant)
    det1 = MahalanobisDetector(layers=["stage2"], noise=0.01)
    det1.fit_features(inputs.layers("train", ("stage2",)), inputs.data.y_train)
    xr = x.clone().requires_grad_(True)
    (got,) = torch.autograd.grad(det1.score_probe(Probe(model, xr), None).sum(), xr)
    xh = x_hats["stage2"].clone().requires_grad_(True)
    (want,) = torch.autograd.grad(direct_m(xh, "stage2").sum(), xh)
    torch.testing.assert_close(got, want)


def test_gradcheck_single_layer_score() -> None:
    model, inputs = tiny_inputs(dtype=torch.float64)
    det = MahalanobisDetector(layers=["stage1"])
    det.fit_features(inputs.layers("train", ("stage1",)), inputs.data.y_train)
    x = inputs.data.x_val[:1].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda xx: det.score_probe(Probe(model, xx, det.layers), None), (x,), fast_mode=True
    )


# -------------------------------------------------------------------------------- end to end
def test_fit_on_end_to_end_and_successful_only() -> None:
    model, inputs = tiny_inputs()
    det = MahalanobisDetector(
        layers=["stage1", "stage3", "embedding"],
        noise=0.002,
        fit_attack_params={"eps": 0.3},
        fit_samples=60,
    ).fit_on(inputs)
    # the pairs kept: clean image correct and adversarial example wrong, by the model itself
    clean, adv, y = inputs.adversarial_examples("train", "fgsm", {"eps": 0.3}, 60, 0)
    ok = (predict_labels(model, clean) == y) & (predict_labels(model, adv) != y)
    assert 10 <= int(ok.sum()) < 60  # enough to filter (MIN_FIT_PAIRS), and the filter bites
    m = det.metrics()
    assert m["mahalanobis/fit_pairs"] == int(ok.sum())
    assert float(det.combiner.train_examples) == 2 * int(ok.sum())
    assert "mahalanobis/fit_pairs" not in det.caveats()
    assert 0.0 <= m["mahalanobis/lr_train_accuracy"] <= 1.0 and m["mahalanobis/layers"] == 3.0
    assert det.reads_images and det.needs_forward and det.layers == ()
    preds, scores = score_images(det, model, inputs.data.x_val, batch_size=16)
    assert scores.shape == (30,) and torch.isfinite(scores).all()
    torch.testing.assert_close(preds, predict_labels(model, inputs.data.x_val))


def test_fit_pairs_without_the_filter_or_too_few_successes() -> None:
    model, inputs = tiny_inputs()
    # every pair kept without the filter
    all_pairs = MahalanobisDetector(
        layers=["stage3", "embedding"], fit_samples=40, successful_only=False
    ).fit_on(inputs)
    assert all_pairs.metrics()["mahalanobis/fit_pairs"] == 40.0
    # and, with a caveat, when fewer than 10 attacks succeed on correctly classified images
    weak = MahalanobisDetector(
        layers=["stage3", "embedding"], fit_samples=40, fit_attack_params={"eps": 0.005}
    ).fit_on(inputs)
    clean, adv, y = inputs.adversarial_examples("train", "fgsm", {"eps": 0.005}, 40, 0)
    ok = (predict_labels(model, clean) == y) & (predict_labels(model, adv) != y)
    assert int(ok.sum()) < 10 and weak.metrics()["mahalanobis/fit_pairs"] == 40.0
    value, text = weak.caveats()["mahalanobis/fit_pairs"]
    assert value == "all" and f"only {int(ok.sum())} of 40" in text


def test_single_layer_needs_no_adversarial_examples() -> None:
    model, inputs = tiny_inputs()
    inputs.craft = None  # adversarial_examples would raise
    det = MahalanobisDetector().fit_on(inputs)
    assert not det.needs_forward and not det.combiner.fitted
    z = inputs.outputs.split("val").embeddings
    want = sklearn_min_distance(
        inputs.outputs.split("train").embeddings.double().numpy(),
        inputs.data.y_train.numpy(),
        z.double().numpy(),
    )
    _, scores = score_images(det, model, inputs.data.x_val)
    np.testing.assert_allclose(scores.numpy(), want, rtol=1e-4)


# ------------------------------------------------------------------------------------ config
def test_config_and_errors() -> None:
    """Mahalanobis's own fields (the shared ones: tests/defenses/test_adversarial_fit.py)."""
    cfg = MahalanobisConfig()
    assert (cfg.name, cfg.layers, cfg.noise) == ("mahalanobis", ["embedding"], 0.0)
    assert MahalanobisDetector(noise=0.001).config.noise == 0.001
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ConfigError, match=r"defense\.noise"):
            MahalanobisConfig(noise=bad)


# ------------------------------------------------------------ fixes checked against Lee et al.
def test_bound_keeps_the_score_of_layers_with_negative_weight() -> None:
    """score_bound >= score_probe on every image, whatever the toward class, when the layer
    combination reads a layer the other way round (negative weight): that layer keeps its
    closest-class distance, the others take the distance to the toward class's mean."""
    model, inputs = tiny_inputs(dtype=torch.float64)
    layers = ["stage1", "stage3", "embedding"]
    g = torch.Generator().manual_seed(3)
    x = torch.rand(64, 1, 8, 8, generator=g, dtype=torch.float64)
    toward = torch.randint(0, 3, (64,), generator=g)
    for noise in (0.0, 0.01):
        det = MahalanobisDetector(layers=layers, noise=noise)
        det.fit_features(inputs.layers("train", tuple(layers)), inputs.data.y_train)
        det.combiner.fit(torch.randn(40, 3, generator=g, dtype=torch.float64), torch.arange(40) % 2)
        det.combiner.weight = torch.tensor([0.5, -2.0, 1.0], dtype=torch.float64)
        probe = Probe(model, x, det.layers)
        score = det.score_probe(probe, toward)
        bound = det.score_bound(probe, toward)
        assert (bound >= score - 1e-9).all(), int((bound < score - 1e-9).sum())
        # the bound is the logit of the chosen columns, nothing looser
        closest = det.layer_scores(probe)
        aimed = det.layer_scores(probe, toward)
        chosen = torch.stack([aimed[:, 0], closest[:, 1], aimed[:, 2]], 1)
        torch.testing.assert_close(bound, det.combiner(chosen))


def test_class_means_are_indexed_by_label_not_by_row() -> None:
    """Training labels {0, 1, 3}: class 3's distance is to class 3's own mean (numpy: class
    mean, tied covariance of the class-centred features, pinv); class 2 has no mean, so its
    distance is the closest-class distance (the score: the bound stays an upper bound)."""
    f, y = features()
    y = torch.where(y == 2, 3, y)
    q, _ = features(n=30, seed=1)
    det = MahalanobisDetector().fit_features({"embedding": f}, y)
    fn, yn, qn = f.numpy(), y.numpy(), q.numpy()
    mu = {c: fn[yn == c].mean(0) for c in (0, 1, 3)}
    centred = fn - np.stack([mu[c] for c in yn])
    precision = np.linalg.pinv(centred.T @ centred / len(fn))
    d3 = qn - mu[3]
    want3 = np.einsum("ni,ij,nj->n", d3, precision, d3)
    got3 = det.distance(q, "embedding", torch.full((30,), 3))
    np.testing.assert_allclose(got3.numpy(), want3, rtol=1e-9)
    closest = det.distance(q, "embedding")
    torch.testing.assert_close(det.distance(q, "embedding", torch.full((30,), 2)), closest)
    # mixed classes in one batch: each row by its own label
    mixed = torch.tensor([0, 1, 2, 3, 7] * 6)
    got = det.distance(q, "embedding", mixed)
    for j, c in enumerate(mixed.tolist()):
        if c in mu:
            d = qn[j] - mu[c]
            np.testing.assert_allclose(float(got[j]), d @ precision @ d, rtol=1e-9)
        else:
            assert float(got[j]) == float(closest[j])
    assert det.class_labels.tolist() == [0, 1, 3]


def test_class_labels_are_saved_and_older_state_dicts_mean_classes_0_to_k() -> None:
    f, y = features()
    q, _ = features(n=30, seed=1)
    det = MahalanobisDetector().fit_features({"embedding": f}, torch.where(y == 2, 3, y))
    fresh = MahalanobisDetector()
    fresh.load_state_dict(det.state_dict())
    assert fresh.class_labels.tolist() == [0, 1, 3]
    # a state_dict saved before the labels were kept: classes 0..K-1, one per row of the means
    old = MahalanobisDetector().fit_features({"embedding": f}, y)
    state = old.state_dict()
    del state["class_labels"]
    loaded = MahalanobisDetector().double()  # the fit's dtype (a load keeps the module's)
    loaded.load_state_dict(state)
    assert loaded.class_labels.tolist() == [0, 1, 2]
    two = torch.full((30,), 2)
    torch.testing.assert_close(
        loaded.distance(q, "embedding", two), old.distance(q, "embedding", two)
    )


class HalfBlind(torch.nn.Module):
    """An embedding of the top half of an 8x8 image only: the bottom half's gradient is 0."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.randn(32, 3, generator=torch.Generator().manual_seed(4))

    def layer_outputs(self, x: torch.Tensor, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
        return {"embedding": x[:, :, :4, :].flatten(1) @ self.proj.to(x.dtype)}


def test_preprocessing_moves_zero_gradient_pixels_like_lee_et_al() -> None:
    """Lee et al.'s code steps by -noise * (2 [g >= 0] - 1): a pixel whose gradient is exactly 0
    moves by -noise (sign(0) = +1), it does not stay put."""
    model = HalfBlind()
    g = torch.Generator().manual_seed(5)
    x_train = torch.rand(60, 1, 8, 8, generator=g)
    det = MahalanobisDetector(noise=0.01)
    det.fit_features(model.layer_outputs(x_train, ("embedding",)), torch.arange(60) % 3)
    x = torch.full((4, 1, 8, 8), 0.5)
    x_hat = det.preprocessed(model, x)["embedding"]
    torch.testing.assert_close(x_hat[:, :, 4:, :], torch.full((4, 1, 4, 8), 0.49))
    xr = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(
        det.distance(model.layer_outputs(xr, ())["embedding"], "embedding").sum(), xr
    )
    assert (grad[:, :, 4:, :] == 0).all() and (grad[:, :, :4, :] != 0).all()
    torch.testing.assert_close(x_hat[:, :, :4, :], 0.5 - 0.01 * grad[:, :, :4, :].sign())
