"""LIDDetector against a brute-force numpy k-NN estimate (all pairwise norms, sorted, the nearest
dropped as in Ma et al.'s code, the MLE formula) and a hand-computed one; gradients by finite
differences (gradcheck); end to end through FitInputs with a tiny ResNet and an FGSM written in
tests/defenses/test_mahalanobis.py. The config checks and the state_dict round trip shared with
Mahalanobis are in tests/defenses/test_adversarial_fit.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from robustctl.defenses.base import Probe, layer_outputs, score_images
from robustctl.defenses.lid import LIDConfig, LIDDetector, lid_estimates
from robustctl.errors import ConfigError
from robustctl.inference import predict_labels
from tests.defenses.test_mahalanobis import tiny_inputs


def brute_lid(q: np.ndarray, ref: np.ndarray, k: int) -> np.ndarray:
    """-1 / mean_i log(r_i / r_{k+1}) over neighbours 2..k+1 of ``ref``: the nearest dropped,
    for every query, as in Ma et al.'s ``mle_batch``."""
    d = np.linalg.norm(q[:, None, :] - ref[None, :, :], axis=-1)
    r = np.sort(d, axis=1)[:, 1 : k + 1]
    return -1.0 / np.mean(np.log(r / r[:, -1:]), axis=1)


def test_lid_matches_brute_force_knn() -> None:
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(100, 16, generator=g, dtype=torch.float64)
    q = torch.randn(40, 16, generator=g, dtype=torch.float64) * 1.5
    for k in (2, 5, 20):
        want = brute_lid(q.numpy(), ref.numpy(), k)
        np.testing.assert_allclose(lid_estimates(q, ref, k).numpy(), want, rtol=1e-10)
    # intrinsic dimension: points on a 3-d subspace of R^16 estimate near 3, not 16
    flat = torch.randn(2000, 3, generator=g, dtype=torch.float64) @ torch.randn(
        3, 16, generator=g, dtype=torch.float64
    )
    assert 2.0 < float(lid_estimates(flat[:200], flat[200:], 20).median()) < 4.5
    assert float(lid_estimates(q, ref, 20).median()) > 8.0


def test_reference_members_drop_their_own_point() -> None:
    g = torch.Generator().manual_seed(1)
    ref = torch.randn(60, 8, generator=g, dtype=torch.float64)
    members = ref[[3, 17, 42]]
    want = brute_lid(members.numpy(), ref.numpy(), 10)
    np.testing.assert_allclose(lid_estimates(members, ref, 10).numpy(), want, rtol=1e-10)
    assert torch.isfinite(lid_estimates(members, ref, 10)).all()
    # a near copy (round-off of another forward pass) drops the point it sits on just the same
    np.testing.assert_allclose(lid_estimates(members + 1e-9, ref, 10).numpy(), want, rtol=1e-5)


def test_gradcheck_lid_in_the_features() -> None:
    g = torch.Generator().manual_seed(2)
    ref = torch.randn(30, 4, generator=g, dtype=torch.float64)
    q = torch.randn(4, 4, generator=g, dtype=torch.float64).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: lid_estimates(x, ref, 6), (q,))
    # at a reference member too: its own point is the dropped nearest, whichever way it moves
    member = ref[:2].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: lid_estimates(x, ref, 6), (member,))


def test_gradcheck_through_the_resnet() -> None:
    model, inputs = tiny_inputs(dtype=torch.float64)
    det = LIDDetector(layers=["stage1", "embedding"], k=5, reference_size=20)
    det.set_reference(layer_outputs(model, inputs.data.x_train[:20], det.layers))
    det.combiner.fit(torch.randn(30, 2, dtype=torch.float64), torch.arange(30) % 2)
    x = inputs.data.x_val[:1].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda xx: det.score_probe(Probe(model, xx, det.layers), None), (x,), fast_mode=True
    )


def test_fit_on_end_to_end() -> None:
    model, inputs = tiny_inputs()
    det = LIDDetector(k=8, reference_size=30, fit_samples=60, fit_attack_params={"eps": 0.3})
    assert det.layers == ("stem", "stage1", "stage2", "stage3", "embedding")
    det.fit_on(inputs)
    clean, adv, y = inputs.adversarial_examples("train", "fgsm", {"eps": 0.3}, 60, 0)
    kept = int(((predict_labels(model, clean) == y) & (predict_labels(model, adv) != y)).sum())
    assert 10 <= kept < 60
    m = det.metrics()
    assert m["lid/fit_pairs"] == kept and det.caveats() == {}
    assert float(det.combiner.train_examples) == 3 * kept  # clean + noisy + adversarial
    assert (m["lid/k"], m["lid/reference_size"], m["lid/layers"]) == (8.0, 30.0, 5.0)
    # the reference: 30 clean training images drawn with the fit's generator
    idx = torch.randperm(90, generator=torch.Generator().manual_seed(7))[:30]
    ref = layer_outputs(model, inputs.data.x_train[idx], det.layers)
    for name in det.layers:
        torch.testing.assert_close(det.reference(name), ref[name])
    # their training rows, the rows an attacker's starting pool leaves out
    assert torch.equal(det.reference_rows, idx) and torch.equal(det.held_training_rows(), idx)
    preds, scores = score_images(det, model, inputs.data.x_val, batch_size=16)
    assert scores.shape == (30,) and torch.isfinite(scores).all()
    no_noise = LIDDetector(
        layers=["embedding"],
        k=8,
        reference_size=30,
        fit_samples=40,
        noisy=False,
        successful_only=False,
    ).fit_on(inputs)
    assert no_noise.metrics()["lid/fit_pairs"] == 40.0
    assert float(no_noise.combiner.train_examples) == 80.0


def test_noisy_examples_have_the_adversarial_l2_norm(monkeypatch: pytest.MonkeyPatch) -> None:
    _, inputs = tiny_inputs()
    seen: list[torch.Tensor] = []
    real = LIDDetector.lid_features_of

    def spy(self, model, x, batch_size=512):  # type: ignore[no-untyped-def]
        seen.append(x)
        return real(self, model, x, batch_size)

    monkeypatch.setattr(LIDDetector, "lid_features_of", spy)
    LIDDetector(
        k=5,
        reference_size=20,
        fit_samples=30,
        successful_only=False,
        fit_attack_params={"eps": 0.02},
    ).fit_on(inputs)
    clean, noisy, adv = seen
    torch.testing.assert_close(
        clean, inputs.adversarial_examples("train", "fgsm", {"eps": 0.02}, 30, 0)[0]
    )
    # eps small against pixels in (0, 1): few clipped pixels, so the norms agree closely
    d_adv = (adv - clean).flatten(1).norm(dim=1)
    d_noisy = (noisy - clean).flatten(1).norm(dim=1)
    assert (d_noisy <= d_adv + 1e-6).all() and (d_noisy > 0.9 * d_adv).all()
    assert not torch.equal(torch.sign(noisy - clean), torch.sign(adv - clean))


def test_separable_lid_features_give_a_high_auc() -> None:
    # clean points on a 2-d plane of R^10 (the reference too); "adversarial" points off it
    g = torch.Generator().manual_seed(5)
    basis = torch.randn(2, 10, generator=g)
    det = LIDDetector(layers=["embedding"], k=10, reference_size=200)
    det.set_reference({"embedding": torch.randn(200, 2, generator=g) @ basis})

    def draw(n: int, adv: bool) -> torch.Tensor:
        on = torch.randn(n, 2, generator=g) @ basis
        return on + adv * 1.0 * torch.randn(n, 10, generator=g)

    train = torch.cat([draw(100, False), draw(100, True)])
    det.combiner.fit(det.lid_features({"embedding": train}), torch.arange(200) >= 100)
    test = torch.cat([draw(100, False), draw(100, True)])
    probe = Probe.known(None, test, test, torch.zeros(200, 1))  # type: ignore[arg-type]
    scores = det.score_probe(probe, None)
    assert roc_auc_score(np.r_[np.zeros(100), np.ones(100)], scores.numpy()) > 0.9


def test_config_and_errors() -> None:
    """LID's own fields (the shared ones: tests/defenses/test_adversarial_fit.py)."""
    cfg = LIDConfig()
    assert (cfg.name, cfg.k, cfg.reference_size, cfg.noisy) == ("lid", 20, 100, True)
    assert cfg.layers == ["stem", "stage1", "stage2", "stage3", "embedding"]
    for bad, key in [
        ({"k": 1}, "defense.k"),
        ({"k": 20, "reference_size": 20}, "defense.reference_size"),
        ({"k": 20, "reference_size": 5}, "defense.reference_size"),
    ]:
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            LIDConfig(**bad)
    _, inputs = tiny_inputs()
    with pytest.raises(ValueError, match="reference_size 500"):
        LIDDetector(reference_size=500).fit_on(inputs)


# ---------------------------------------------------------------- Ma et al.'s neighbour rule
def test_hand_computed_lid_drops_the_nearest_neighbour() -> None:
    """Ma et al.'s mle_batch: sort the distances, drop the nearest, use neighbours 2..k+1, for
    every point. Reference 0, 1, 2, 4, 7 on a line; query 0.25: distances 0.25, 0.75, 1.75,
    3.75, 6.75, the nearest (0.25) dropped."""
    ref = torch.tensor([[0.0], [1.0], [2.0], [4.0], [7.0]], dtype=torch.float64)
    q = torch.tensor([[0.25], [2.0]], dtype=torch.float64)
    # k = 2, query 0.25: r = (0.75, 1.75): -1 / ((log(0.75 / 1.75) + log 1) / 2) = 2 / log(7/3)
    # k = 2, query 2 (a reference point): r = (1, 2) after its own 0: 2 / log 2
    want = [2 / math.log(7 / 3), 2 / math.log(2)]
    np.testing.assert_allclose(lid_estimates(q, ref, 2).numpy(), want, rtol=1e-12)
    # k = 3, query 0.25: r = (0.75, 1.75, 3.75)
    want3 = -3 / (math.log(0.75 / 3.75) + math.log(1.75 / 3.75))
    np.testing.assert_allclose(float(lid_estimates(q[:1], ref, 3)), want3, rtol=1e-12)


def test_lid_is_continuous_across_a_reference_point() -> None:
    """At a reference point and a hair off it the same neighbours count (the nearest, its own
    point or the one it sits on, is dropped either way): the estimates agree."""
    g = torch.Generator().manual_seed(6)
    ref = torch.randn(50, 8, generator=g, dtype=torch.float64)
    on = ref[[3, 17, 30]]
    off = on + 1e-7 * torch.randn(on.shape, generator=g, dtype=torch.float64)
    at, near = lid_estimates(on, ref, 10), lid_estimates(off, ref, 10)
    np.testing.assert_allclose(near.numpy(), at.numpy(), rtol=1e-5)
    assert (at > 1).all() and (at < 50).all()


def test_older_state_dict_without_reference_rows_loads_with_none_held() -> None:
    _, inputs = tiny_inputs()
    cfg = LIDConfig(layers=["embedding"], k=5, reference_size=20, fit_samples=20)
    cfg.successful_only = False
    det = LIDDetector(cfg).fit_on(inputs)
    state = det.state_dict()
    assert state["reference_rows"].shape == (20,)
    del state["reference_rows"]
    old = LIDDetector(cfg)
    old.load_state_dict(state)
    assert old.fitted and old.held_training_rows().numel() == 0
