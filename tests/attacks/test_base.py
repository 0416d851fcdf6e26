"""The base class's contract: prediction view, targets, modes, devices, the success re-check."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from robustctl.attacks import ATTACKS, BIM, CW, FGSM, JSMA, PGD, DeepFool, build
from robustctl.errors import ConfigError
from robustctl.models import PredictionView

FAST = {  # small budgets: these tests check plumbing, not strength
    "fgsm": {},
    "bim": {},
    "pgd": {},
    "cw": {"binary_steps": 2, "steps": 5},
    "cw_hc": {"binary_steps": 2, "steps": 5},
    "jsma": {"steps": 3},
    "deepfool": {"steps": 5},
}


def test_registry_names_every_method():
    from robustctl.attacks import method_configs
    from robustctl.threat_models.cw_wb import CWWhiteBox

    methods = {
        *("fgsm", "bim", "pgd", "cw", "cw_hc", "jsma", "deepfool"),
        *("apgd", "apgd_t", "square", "fab", "fab_t", "fmn", "hsj"),
    }
    assert set(ATTACKS) == methods
    assert set(method_configs()) == set(ATTACKS)
    # C&W-wb needs a detector: it keeps its method name but is no option of the attack group
    assert CWWhiteBox.method == "cw_wb" and "cw_wb" not in ATTACKS


class Affine:
    """f(x) = W x + b on [N, 1, 8, 8] inputs, evaluated by hand (float64, from W and b) as the
    reference."""

    def __init__(self, classes: int, seed: int, scale: float = 1.0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.weight = torch.randn(classes, 64, generator=g) * scale
        self.bias = -self.weight @ torch.full((64,), 0.5)  # all classes tie at the grey image
        self.x = 0.25 + 0.5 * torch.rand(16, 1, 8, 8, generator=g)
        layer = nn.Linear(64, classes)
        with torch.no_grad():
            layer.weight.copy_(self.weight)
            layer.bias.copy_(self.bias)
        self.model = nn.Sequential(nn.Flatten(), layer).eval()
        self.y = self.logits(self.x).argmax(1)

    def logits(self, x: Tensor) -> Tensor:
        return x.double().flatten(1) @ self.weight.double().T + self.bias.double()

    def clear(self, x: Tensor) -> Tensor:
        """Examples whose top two logits differ by more than float32 round-off (the argmax is
        unambiguous)."""
        top = self.logits(x).topk(2, dim=1).values
        return top[:, 0] - top[:, 1] > 1e-5


AFFINE_CASES = [(m, p) for m, p in FAST.items() if m not in ("fgsm", "bim", "pgd")] + [
    ("fgsm", {"eps": 0.02}),
    ("bim", {"eps": 0.02}),
    ("pgd", {"eps": 0.02}),
    ("fgsm", {"eps": 0.03, "targeted": "random"}),
    ("bim", {"eps": 0.03, "targeted": "least_likely"}),
]


def case_id(value: object) -> str:
    return value if isinstance(value, str) else "-".join(map(str, value.values()))


@pytest.mark.parametrize("method, params", AFFINE_CASES, ids=case_id)
def test_success_mask_is_what_the_weights_say_about_x_adv(method, params):
    # Replaces re-predicting with the attacked model (how __call__ computes success): x_adv's class
    # comes from W, b by hand.
    affine = Affine(classes=4, seed=0)
    result = build(method, affine.model, **params)(affine.x, affine.y)
    assert result.x_adv.min() >= 0 and result.x_adv.max() <= 1
    pred = affine.logits(result.x_adv).argmax(1)
    clear = affine.clear(result.x_adv)
    assert clear.sum() >= len(clear) - 1  # at most one near-tie is left out
    assert torch.equal(result.pred[clear], pred[clear])
    expected = pred != affine.y if result.target is None else pred == result.target
    assert torch.equal(result.success[clear], expected[clear])


def test_success_masks_on_the_affine_model_are_not_trivial():
    """The cases above see both outcomes, and a targeted case where leaving y is not reaching t,
    so a mask that were constant, or untargeted for a targeted attack, would fail them."""
    affine = Affine(classes=4, seed=0)
    fgsm = FGSM(affine.model, eps=0.02)(affine.x, affine.y)
    assert 0 < fgsm.success.sum() < len(fgsm.success)
    bim = build("bim", affine.model, eps=0.03, targeted="least_likely")(affine.x, affine.y)
    pred = affine.logits(bim.x_adv).argmax(1)
    assert ((pred != affine.y) & (pred != bim.target)).any() and bim.success.any()


def test_fgsm_on_a_two_class_affine_model_is_one_signed_step():
    # Hand-computed: with 2 classes grad_x CE = p_other (w_other - w_y),
    # so FGSM = clip(x + eps sign(w_other - w_y)).
    affine = Affine(classes=2, seed=1, scale=0.2)
    x = affine.x.clone()
    x[:, :, 0] = 0.0  # rows at the box's faces: clipping binds
    x[:, :, 1] = 1.0
    y = affine.logits(x).argmax(1)
    eps = 0.1
    direction = (affine.weight[1 - y] - affine.weight[y]).sign().view_as(x)
    expected = (x + eps * direction).clamp(0, 1)
    result = FGSM(affine.model, eps=eps)(x, y)
    torch.testing.assert_close(result.x_adv, expected, atol=1e-6, rtol=0)
    hand = affine.logits(expected).argmax(1)
    assert torch.equal(result.success, hand != y) and 0 < result.success.sum() < len(y)


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
        assert ours.success.any()  # the comparison is not vacuous


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
    for p, g in zip(model.parameters(), grads, strict=True):  # only input gradients are taken
        assert (p.grad is None and g is None) or torch.equal(p.grad, g)


def test_works_under_no_grad_and_returns_on_input_device(trained):
    with torch.no_grad():
        result = PGD(trained.model, eps=0.1)(trained.x, trained.y)
    assert result.x_adv.device == trained.x.device and result.success.any()


def test_random_targets_differ_from_labels_and_are_reproducible(trained, reference):
    a = FGSM(trained.model, eps=0.1, targeted="random", seed=3)(trained.x, trained.y)
    b = FGSM(trained.model, eps=0.1, targeted="random", seed=3)(trained.x, trained.y)
    assert (a.target != trained.y).all() and torch.equal(a.target, b.target)
    assert len(a.target.unique()) > 3
    # the class of x_adv comes from the never-attacked reference copy, not from the attack's own
    # pred
    with torch.no_grad():
        assert torch.equal(a.success, reference.predict_logits(a.x_adv).argmax(1) == a.target)


def test_least_likely_and_given_targets():
    # Replaces the attacked model's own argmin (how resolve_target computes it): the least likely
    # class from W, b by hand.
    affine = Affine(classes=4, seed=0)
    least = affine.logits(affine.x).argmin(1)
    assert len(least.unique()) > 2 and (least != affine.y).all()
    result = BIM(affine.model, eps=0.1, targeted="least_likely")(affine.x, affine.y)
    assert torch.equal(result.target, least)
    given = (affine.y + 1) % 4
    result = JSMA(affine.model, steps=2)(affine.x, affine.y, target=given)
    assert torch.equal(result.target, given)


def test_targeted_attack_moves_toward_the_target(trained, reference):
    target = (trained.y + 5) % 10
    result = CW(trained.model, binary_steps=4, steps=30, lr=0.05, c_init=1.0)(
        trained.x, trained.y, target=target
    )
    # judged by the never-attacked reference copy, not by the attack's own pred
    with torch.no_grad():
        reached = reference.predict_logits(result.x_adv).argmax(1) == target
    assert reached.float().mean() > 0.5
    assert torch.equal(result.success, reached)


def test_unsupported_target_mode_is_refused(trained):
    with pytest.raises((ValueError, ConfigError), match="targeted"):
        DeepFool(trained.model, targeted="random")
    with pytest.raises((ValueError, ConfigError), match="targeted"):
        FGSM(trained.model, targeted="sideways")


def test_bounded_attack_sweep_gives_one_result_per_eps(trained):
    results = FGSM(trained.model).sweep(trained.x, trained.y, [0.02, 0.1, 0.3])
    linf = [float((r.x_adv - trained.x).abs().max()) for r in results]
    assert linf == pytest.approx([0.02, 0.1, 0.3], abs=1e-6)
    rates = [float(r.success.float().mean()) for r in results]
    assert rates[0] <= rates[1] <= rates[2] and rates[2] > rates[0]
