"""The base class's contract: prediction view, targets, modes, devices, the success re-check."""

from __future__ import annotations

import pytest
import torch

from robustctl.attacks import ATTACKS, BIM, CW, FGSM, JSMA, PGD, DeepFool, build
from robustctl.models import PredictionView

FAST = {  # small budgets: these tests check plumbing, not strength
    "fgsm": {}, "bim": {}, "pgd": {}, "cw": {"binary_steps": 2, "steps": 5},
    "cw_hc": {"binary_steps": 2, "steps": 5}, "jsma": {"steps": 3}, "deepfool": {"steps": 5},
}


def test_registry_names_every_method():
    assert set(ATTACKS) == {"fgsm", "bim", "pgd", "cw", "cw_hc", "jsma", "deepfool"}


@pytest.mark.parametrize("method", sorted(FAST))
def test_success_mask_agrees_with_repredicting_the_batch(trained, method):
    result = build(method, trained.model, **FAST[method])(trained.x, trained.y)
    with torch.no_grad():
        pred = trained.model.predict_logits(result.x_adv).argmax(1)
    assert torch.equal(result.pred, pred)
    expected = pred != trained.y if result.target is None else pred == result.target
    assert torch.equal(result.success, expected)
    assert result.x_adv.min() >= 0 and result.x_adv.max() <= 1


@pytest.mark.parametrize("method", ["fgsm", "bim", "cw", "deepfool", "jsma"])
def test_rce_model_is_attacked_through_its_prediction_view(trained, rce_twin, method):
    """The twin predicts with -Z and has negated Z: same prediction logits, so the same attack.
    An attack reading ``model(x).logits`` would push the twin the wrong way."""
    x, y = trained.x[:16], trained.y[:16]
    with torch.no_grad():
        torch.testing.assert_close(rce_twin.predict_logits(x), trained.model.predict_logits(x))
        torch.testing.assert_close(rce_twin(x).logits, -trained.model(x).logits)
    ours = build(method, trained.model, **FAST[method])(x, y)
    twin = build(method, rce_twin, **FAST[method])(x, y)
    torch.testing.assert_close(twin.x_adv, ours.x_adv, atol=1e-5, rtol=0)
    assert torch.equal(twin.success, ours.success)
    if method in ("fgsm", "bim"):
        assert ours.success.any()   # the comparison is not vacuous


def test_plain_logits_module_gives_the_same_result(trained):
    ours = BIM(trained.model, eps=0.1)(trained.x, trained.y)
    plain = BIM(PredictionView(trained.model), eps=0.1)(trained.x, trained.y)
    assert torch.equal(ours.x_adv, plain.x_adv) and torch.equal(ours.success, plain.success)


def test_mode_is_restored_and_batch_norm_untouched(trained):
    model = trained.model
    stats = model.stem[1].running_mean.clone()
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    model.train()
    try:
        FGSM(model, eps=0.1)(trained.x, trained.y)
        assert model.training
    finally:
        model.eval()
    assert torch.equal(model.stem[1].running_mean, stats)
    for p, g in zip(model.parameters(), grads, strict=True):   # only input gradients are taken
        assert (p.grad is None and g is None) or torch.equal(p.grad, g)


def test_works_under_no_grad_and_returns_on_input_device(trained):
    with torch.no_grad():
        result = PGD(trained.model, eps=0.1)(trained.x, trained.y)
    assert result.x_adv.device == trained.x.device and result.success.any()


def test_random_targets_differ_from_labels_and_are_reproducible(trained):
    a = FGSM(trained.model, eps=0.1, targeted="random", seed=3)(trained.x, trained.y)
    b = FGSM(trained.model, eps=0.1, targeted="random", seed=3)(trained.x, trained.y)
    assert (a.target != trained.y).all() and torch.equal(a.target, b.target)
    assert len(a.target.unique()) > 3
    assert torch.equal(a.success, a.pred == a.target)


def test_least_likely_and_given_targets(trained):
    with torch.no_grad():
        least = trained.model.predict_logits(trained.x).argmin(1)
    result = BIM(trained.model, eps=0.1, targeted="least_likely")(trained.x, trained.y)
    assert torch.equal(result.target, least)
    given = (trained.y + 1) % 10
    result = JSMA(trained.model, steps=2)(trained.x, trained.y, target=given)
    assert torch.equal(result.target, given)


def test_targeted_attack_moves_toward_the_target(trained):
    target = (trained.y + 5) % 10
    result = CW(trained.model, binary_steps=4, steps=30, lr=0.05, c_init=1.0)(trained.x, trained.y, target=target)
    assert result.success.float().mean() > 0.5
    assert torch.equal(result.success, result.pred == target)


def test_unsupported_target_mode_is_refused(trained):
    with pytest.raises(ValueError, match="targeted"):
        DeepFool(trained.model, targeted="random")
    with pytest.raises(ValueError, match="targeted"):
        FGSM(trained.model, targeted="sideways")


def test_bounded_attack_sweep_gives_one_result_per_eps(trained):
    results = FGSM(trained.model).sweep(trained.x, trained.y, [0.02, 0.1, 0.3])
    linf = [float((r.x_adv - trained.x).abs().max()) for r in results]
    assert linf == pytest.approx([0.02, 0.1, 0.3], abs=1e-6)
    rates = [float(r.success.float().mean()) for r in results]
    assert rates[0] <= rates[1] <= rates[2] and rates[2] > rates[0]
