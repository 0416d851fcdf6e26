"""LIDDetector against a brute-force numpy k-NN estimate (all pairwise norms, sorted, the MLE
formula), leave-one-out included; gradients by finite differences (gradcheck); end to end through
FitInputs with a tiny ResNet and an FGSM written in tests/defenses/test_mahalanobis.py. The config
checks and the state_dict round trip shared with Mahalanobis are in
tests/defenses/test_adversarial_fit.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from robustctl.defenses.base import Probe, layer_outputs, score_images
from robustctl.defenses.lid import LIDConfig, LIDDetector, lid_estimates, matching_rows
from robustctl.errors import ConfigError
from robustctl.inference import predict_labels
from tests.defenses.test_mahalanobis import tiny_inputs


def brute_lid(q: np.ndarray, ref: np.ndarray, k: int, skip_self: bool) -> np.ndarray:
    """-1 / mean_i log(r_i / r_k) over the k nearest of ``ref``; with ``skip_self`` the nearest
    (the query itself, at distance 0) is dropped first, as in Ma et al.'s minibatch code."""
    d = np.linalg.norm(q[:, None, :] - ref[None, :, :], axis=-1)
    d = np.sort(d, axis=1)
    r = d[:, 1 : k + 1] if skip_self else d[:, :k]
    return -1.0 / np.mean(np.log(r / r[:, -1:]), axis=1)


def test_lid_matches_brute_force_knn() -> None:
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(100, 16, generator=g, dtype=torch.float64)
    q = torch.randn(40, 16, generator=g, dtype=torch.float64) * 1.5
    for k in (2, 5, 20):
        want = brute_lid(q.numpy(), ref.numpy(), k, skip_self=False)
        np.testing.assert_allclose(lid_estimates(q, ref, k).numpy(), want, rtol=1e-10)
    # intrinsic dimension: points on a 3-d subspace of R^16 estimate near 3, not 16
    flat = torch.randn(2000, 3, generator=g, dtype=torch.float64) @ torch.randn(
        3, 16, generator=g, dtype=torch.float64
    )
    assert 2.0 < float(lid_estimates(flat[:200], flat[200:], 20).median()) < 4.5
    assert float(lid_estimates(q, ref, 20).median()) > 8.0


def test_leave_one_out_for_reference_members() -> None:
    g = torch.Generator().manual_seed(1)
    ref = torch.randn(60, 8, generator=g, dtype=torch.float64)
    members = ref[[3, 17, 42]]
    want = brute_lid(members.numpy(), ref.numpy(), 10, skip_self=True)
    np.testing.assert_allclose(lid_estimates(members, ref, 10).numpy(), want, rtol=1e-10)
    assert torch.isfinite(lid_estimates(members, ref, 10)).all()
    # explicit exclusion by row: a near copy (round-off of another forward pass) left out too
    near = members + 1e-9
    got = lid_estimates(near, ref, 10, exclude=torch.tensor([3, 17, -1]))
    np.testing.assert_allclose(got[:2].numpy(), want[:2], rtol=1e-5)
    assert abs(float(got[2]) - want[2]) > 0.1 * want[2]  # not excluded: its copy is nearest
    # rows matched by image, bit for bit
    imgs = torch.rand(5, 1, 4, 4, generator=g)
    probe = torch.cat([imgs[[4, 0]], torch.rand(1, 1, 4, 4, generator=g), imgs[[0]] + 1e-7])
    assert matching_rows(probe, imgs).tolist() == [4, 0, -1, -1]


def test_gradcheck_lid_in_the_features() -> None:
    g = torch.Generator().manual_seed(2)
    ref = torch.randn(30, 4, generator=g, dtype=torch.float64)
    q = torch.randn(4, 4, generator=g, dtype=torch.float64).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: lid_estimates(x, ref, 6), (q,))
    # a reference member, its own point left out by row: smooth in its features as well (left
    # out by value instead, any move would bring its own point back: a jump, no derivative)
    member = ref[:2].clone().requires_grad_(True)
    rows = torch.tensor([0, 1])
    assert torch.autograd.gradcheck(lambda x: lid_estimates(x, ref, 6, exclude=rows), (member,))


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
    excluded: list[torch.Tensor] = []
    real = LIDDetector.lid_features_of

    def spy(self, model, x, exclude=None, batch_size=512):  # type: ignore[no-untyped-def]
        seen.append(x)
        excluded.append(exclude)
        return real(self, model, x, exclude, batch_size)

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
    # the reference row of each clean image that is a reference image, left out of all three
    ref_idx = torch.randperm(90, generator=torch.Generator().manual_seed(7))[:20]
    pos = {int(i): j for j, i in enumerate(ref_idx)}
    train_idx = torch.randperm(90, generator=torch.Generator().manual_seed(0))[:30]
    want = torch.tensor([pos.get(int(i), -1) for i in train_idx])
    assert (want >= 0).sum() >= 3
    assert all(torch.equal(ex, want) for ex in excluded) and len(excluded) == 3
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
    ]:
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            LIDConfig(**bad)
    _, inputs = tiny_inputs()
    with pytest.raises(ValueError, match="reference_size 500"):
        LIDDetector(reference_size=500).fit_on(inputs)
