"""APGD / APGD-T (robustctl/attacks/apgd.py): the DLR losses and the checkpoint schedule against
hand-computed numbers, exact behaviour on a two-class affine model, the budget, the restart and
target protocol, and robust accuracy against torchattacks' port of the authors' code.

torchattacks draws its random start from the global RNG and ours from the attack's generator, so
the runs are compared by robust accuracy (within a few examples), not tensor by tensor.
"""

from __future__ import annotations

import pytest
import torch
import torchattacks
from torch import nn

from robustctl.attacks import apgd as apgd_module
from robustctl.attacks import build
from robustctl.attacks.apgd import (
    APGD,
    APGDT,
    ApgdConfig,
    ApgdTConfig,
    checkpoints,
    dlr_loss,
    dlr_loss_targeted,
)
from robustctl.errors import ConfigError
from robustctl.models import PredictionView
from tests.conftest import robust_accuracy

# ------------------------------------------------------------------------------- the DLR losses
# one row, y = 1 is the top class; sorted descending: 3, 2, 1, 0, -1, so z_pi1 - z_pi3 = 3 - 1 = 2
# and z_pi1 - (z_pi3 + z_pi4) / 2 = 3 - (1 + 0) / 2 = 2.5
Z = torch.tensor([[1.0, 3.0, 2.0, 0.0, -1.0]])


@pytest.mark.parametrize(
    ("y", "expected"),
    [
        (1, -0.5),  # -(3 - 2) / 2: correct, margin 1 to the runner-up
        (0, 1.0),  # -(1 - 3) / 2: misclassified, the largest other logit is 3
        (4, 2.0),  # -(-1 - 3) / 2
    ],
)
def test_dlr_matches_hand_computed_values(y, expected):
    assert dlr_loss(Z, torch.tensor([y])).item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    ("y", "t", "expected"),
    [
        (1, 4, -1.6),  # -(3 - (-1)) / 2.5
        (0, 2, 0.4),  # -(1 - 2) / 2.5
        (1, 2, -0.4),  # -(3 - 2) / 2.5
    ],
)
def test_targeted_dlr_matches_hand_computed_values(y, t, expected):
    value = dlr_loss_targeted(Z, torch.tensor([y]), torch.tensor([t])).item()
    assert value == pytest.approx(expected, abs=1e-6)


def test_dlr_is_invariant_to_positive_scaling_and_shifts():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(32, 10, generator=g, dtype=torch.float64)
    y, t = torch.randint(0, 10, (32,), generator=g), torch.randint(0, 10, (32,), generator=g)
    for a, b in [(0.01, 0.0), (7.3, 0.0), (250.0, -4.0), (1.0, 3.0)]:
        torch.testing.assert_close(dlr_loss(a * z + b, y), dlr_loss(z, y))
        torch.testing.assert_close(dlr_loss_targeted(a * z + b, y, t), dlr_loss_targeted(z, y, t))
    # not a constant: the sign says misclassified or not
    correct = z.argmax(1) == y
    assert (dlr_loss(z, y)[correct] < 0).all() and (dlr_loss(z, y)[~correct] > 0).all()


def test_dlr_needs_enough_classes():
    with pytest.raises(ValueError, match="3 classes"):
        dlr_loss(torch.zeros(2, 2), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="4 classes"):
        dlr_loss_targeted(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), torch.ones(2).long())


# ----------------------------------------------------------------------------- the checkpoints
def test_checkpoints_follow_the_papers_formula():
    # p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06):
    #   p_2 = 0.22 + max(0.22 - 0.03, 0.06) = 0.41    p_3 = 0.41 + 0.16 = 0.57
    #   p_4 = 0.57 + 0.13 = 0.70                      p_5 = 0.70 + 0.10 = 0.80
    #   p_6 = 0.80 + 0.07 = 0.87                      p_7 = 0.87 + max(0.04, 0.06) = 0.93
    #   p_8 = 0.93 + 0.06 = 0.99                      p_9 = 1.05 > 1: stop
    # w_j = ceil(p_j * 100) (summed in floats p_3 = 0.5700000000000001, whose ceil is 58)
    assert checkpoints(100) == [0, 22, 41, 57, 70, 80, 87, 93, 99]
    # steps = 10: ceil(2.2, 4.1, 5.7, 7.0, 8.0, 8.7, 9.3, 9.9) = 3, 5, 6, 7, 8, 9, 10, 10
    assert checkpoints(10) == [0, 3, 5, 6, 7, 8, 9, 10]
    # steps = 200: 44, 82, 114, 140, 160, 174, 186, 198
    assert checkpoints(200) == [0, 44, 82, 114, 140, 160, 174, 186, 198]


# --------------------------------------------------------------------------------- the config
def test_config_defaults_and_ranges():
    cfg = ApgdConfig()
    assert (cfg.loss, cfg.steps, cfg.restarts, cfg.rho, cfg.momentum, cfg.norm) == (
        "ce",
        100,
        1,
        0.75,
        0.75,
        "linf",
    )
    assert (ApgdTConfig().n_target_classes, ApgdTConfig().steps) == (9, 100)
    for make, key in [
        (lambda: ApgdConfig(loss="hinge"), "attack.loss"),
        (lambda: ApgdConfig(rho=0.0), "attack.rho"),
        (lambda: ApgdConfig(momentum=1.5), "attack.momentum"),
        (lambda: ApgdConfig(steps=0), "attack.steps"),
        (lambda: ApgdConfig(eps=0.0), "attack.eps"),
        (lambda: ApgdTConfig(n_target_classes=0), "attack.n_target_classes"),
        (lambda: ApgdTConfig(targeted="random"), "attack.targeted"),
    ]:
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            make()


# ------------------------------------------------------------------ exact on an affine model
def two_class_affine(seed: int = 0):
    """f(x) = W x + b on [N, 1, 8, 8] images in [0.25, 0.75]; with two classes grad_x CE =
    p_other (w_other - w_y), so the CE maximum over a small Linf ball is x + eps sign(w_o - w_y)."""
    g = torch.Generator().manual_seed(seed)
    layer = nn.Linear(64, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(2, 64, generator=g) * 0.1)
        layer.bias.zero_()
    model = nn.Sequential(nn.Flatten(), layer).eval()
    x = 0.25 + 0.5 * torch.rand(16, 1, 8, 8, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, layer.weight.detach(), x, y


def test_linf_apgd_reaches_the_linear_optimum_and_returns_it():
    model, w, x, y = two_class_affine()
    eps = 0.01
    result = APGD(model, eps=eps, steps=10)(x, y)
    kept = ~result.success  # not flipped: the highest-loss point is returned
    assert kept.sum() >= 10
    corner = x + eps * (w[1 - y] - w[y]).sign().view_as(x)
    torch.testing.assert_close(result.x_adv[kept], corner[kept], atol=1e-6, rtol=0)


def test_l2_apgd_converges_to_the_linear_optimum():
    model, w, x, y = two_class_affine(1)
    eps = 0.1
    result = APGD(model, eps=eps, norm="l2", steps=50)(x, y)
    kept = ~result.success
    assert kept.sum() >= 10
    d = (w[1 - y] - w[y]).view_as(x)
    best = x + eps * d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    torch.testing.assert_close(result.x_adv[kept], best[kept], atol=2e-4, rtol=0)


class Bowl(nn.Module):
    """Two classes, z = (0, ||x - c||^2 + 1): always class 1, and CE(z, 1) is largest at x = c,
    a point inside the ball. Fixed-size sign steps bounce around c; only halving the step
    size converges to it."""

    def __init__(self, c):
        super().__init__()
        self.register_buffer("c", c)

    def forward(self, x):
        d = ((x - self.c) ** 2).flatten(1).sum(1) + 1.0
        return torch.stack([torch.zeros_like(d), d], 1)


def test_step_size_halving_converges_to_an_interior_maximum():
    g = torch.Generator().manual_seed(0)
    x = 0.3 + 0.4 * torch.rand(8, 1, 8, 8, generator=g)
    eps = 0.1
    c = x + 0.5 * eps * (2 * torch.rand(x.shape, generator=g) - 1)
    y = torch.ones(8, dtype=torch.long)
    result = APGD(Bowl(c), eps=eps, steps=100)(x, y)
    assert not result.success.any()
    # 8 checkpoints halve eta = 2 eps down to eps / 128; fixed steps of 2 eps stay ~eps away
    assert (result.x_adv - c).abs().max() < eps / 20


# ---------------------------------------------------------------------- budget and protocol
def watch_iterates(attack):
    """Record, for every point the attack evaluates, its distance to its own clean image and
    whether it lies in [0, 1] (so a projection bug hidden by the base's final projection
    shows)."""
    seen = {"dist": [], "box": []}
    run_once, loss_and_grad = attack.run_once, attack.loss_and_grad
    center = {}

    def watched_run(x, objective):
        center["x"] = x
        return run_once(x, objective)

    def watched_grad(x_k, loss_fn):
        delta = (x_k - center["x"]).flatten(1)
        seen["dist"].append(delta.abs().amax(1) if attack.norm == "linf" else delta.norm(dim=1))
        seen["box"].append(bool((x_k.min() >= 0) & (x_k.max() <= 1)))
        return loss_and_grad(x_k, loss_fn)

    attack.run_once, attack.loss_and_grad = watched_run, watched_grad
    return seen


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("apgd", {"eps": 0.1, "restarts": 2}),
        ("apgd", {"eps": 0.4, "norm": "l2", "loss": "dlr"}),
        ("apgd_t", {"eps": 0.1, "n_target_classes": 2}),
        ("apgd_t", {"eps": 0.4, "norm": "l2", "n_target_classes": 2}),
    ],
)
def test_every_iterate_stays_in_the_ball_and_the_box(trained, reference, method, params):
    x, y = trained.x[:16].clone(), trained.y[:16]
    x[:8] = (x[:8] * 3 - 1).clamp(0, 1)  # pixels at exactly 0 and 1
    attack = build(method, trained.model, steps=12, **params)
    seen = watch_iterates(attack)
    result = attack(x, y)
    eps = attack.eps * (1 + 1e-5) + 1e-6
    assert len(seen["dist"]) >= 13 and all(seen["box"])
    assert all((d <= eps).all() for d in seen["dist"])
    delta = (result.x_adv - x).flatten(1)
    dist = delta.abs().amax(1) if attack.norm == "linf" else delta.norm(dim=1)
    assert (dist <= eps).all() and result.x_adv.min() >= 0 and result.x_adv.max() <= 1
    assert 0 < result.success.sum() < len(y)  # both outcomes: the checks are not vacuous
    with torch.no_grad():  # judged by the never-attacked copy
        assert torch.equal(result.success, reference.predict_logits(result.x_adv).argmax(1) != y)


def test_large_budget_fools_every_image_and_a_tiny_one_none(trained, reference):
    x, y = trained.x, trained.y
    strong = APGD(trained.model, eps=0.5, steps=20)(x, y)
    with torch.no_grad():
        assert (reference.predict_logits(strong.x_adv).argmax(1) != y).all()
    tiny = APGD(trained.model, eps=1e-6, steps=20)(x, y)  # eps = 0 itself is refused (config)
    assert not tiny.success.any()
    assert (tiny.x_adv - x).abs().max() <= 1e-6 + 1e-7


def test_eot_averages_several_evaluations_per_step(trained, reference):
    """On a deterministic model the mean of eot identical gradients is the gradient: the same
    iterates (Linf steps follow its sign) at eot times the passes."""
    x, y = trained.x[:24], trained.y[:24]
    once = APGD(trained.model, eps=0.08, steps=10)
    thrice = APGD(trained.model, eps=0.08, steps=10, eot=3)
    a, b = once(x, y), thrice(x, y)
    assert torch.allclose(a.x_adv, b.x_adv, atol=1e-6) and torch.equal(a.success, b.success)
    assert thrice.passes == 3 * once.passes == 3 * 11 * 24
    with pytest.raises(ConfigError):
        ApgdConfig(eot=0)


def test_restarts_attack_only_the_examples_not_yet_fooled(trained):
    x, y, steps = trained.x, trained.y, 10
    one = APGD(trained.model, eps=0.06, steps=steps, seed=5)
    first = one(x, y)
    assert one.passes == (steps + 1) * len(y)  # one gradient per iterate, x_0 included
    two = APGD(trained.model, eps=0.06, steps=steps, restarts=2, seed=5)
    both = two(x, y)
    failed = int((~first.success).sum())
    assert 0 < failed < len(y)
    assert two.passes == (steps + 1) * (len(y) + failed)
    assert not (first.success & ~both.success).any()  # the same first run, then more
    assert torch.equal(both.x_adv[first.success], first.x_adv[first.success])


def test_apgd_t_runs_one_targeted_dlr_per_ranked_class(trained, monkeypatch):
    x, y, steps = trained.x[:12], trained.y[:12], 3
    with torch.no_grad():
        order = trained.model.predict_logits(x).argsort(1, descending=True)
    seen = []

    def recording(logits, y_, t_):
        seen.append(t_.clone())
        return dlr_loss_targeted(logits, y_, t_)

    monkeypatch.setattr(apgd_module, "dlr_loss_targeted", recording)
    attack = APGDT(trained.model, eps=1e-4, steps=steps, n_target_classes=3)
    result = attack(x, y)
    assert not result.success.any() and result.target is None  # untargeted for the API
    assert attack.passes == 3 * (steps + 1) * len(y)
    runs = [seen[i * (steps + 1)] for i in range(3)]
    for k, targets in enumerate(runs, start=1):  # the 2nd, 3rd, 4th highest clean logits
        assert torch.equal(targets, order[:, k])
        assert all(torch.equal(t, targets) for t in seen[(k - 1) * (steps + 1) : k * (steps + 1)])


def test_apgd_t_success_is_untargeted_and_given_targets_are_targeted(trained, reference):
    x, y = trained.x[:24], trained.y[:24]
    result = APGDT(trained.model, eps=0.1, steps=20, n_target_classes=3)(x, y)
    with torch.no_grad():
        pred = reference.predict_logits(result.x_adv).argmax(1)
    assert torch.equal(result.success, pred != y) and 0 < result.success.sum() < len(y)
    target = (y + 1) % 10
    given = APGDT(trained.model, eps=0.3, steps=20)(x, y, target=target)
    with torch.no_grad():
        pred = reference.predict_logits(given.x_adv).argmax(1)
    assert torch.equal(given.target, target) and torch.equal(given.success, pred == target)
    assert given.success.any()


def test_rce_model_is_attacked_through_its_prediction_view(trained, rce_twin):
    """Same prediction logits, opposite raw logits: APGD must not see the difference."""
    x, y = trained.x[:16], trained.y[:16]
    for method, params in [("apgd", {"loss": "dlr"}), ("apgd_t", {"n_target_classes": 2})]:
        ours = build(method, trained.model, eps=0.1, steps=10, **params)(x, y)
        twin = build(method, rce_twin, eps=0.1, steps=10, **params)(x, y)
        torch.testing.assert_close(twin.x_adv, ours.x_adv, atol=1e-5, rtol=0)
        assert torch.equal(twin.success, ours.success) and ours.success.any()


# --------------------------------------------------------------------------- vs torchattacks
def compare(trained, reference, x, y, method, eps, norm, steps, loss="ce", classes=10):
    ours = build(
        method,
        trained.model,
        eps=eps,
        norm=norm,
        steps=steps,
        **({"loss": loss} if method == "apgd" else {"n_target_classes": classes - 1}),
    )(x, y)
    view = PredictionView(trained.model)
    kind = {"linf": "Linf", "l2": "L2"}[norm]
    if method == "apgd":
        ref = torchattacks.APGD(view, norm=kind, eps=eps, steps=steps, n_restarts=1, loss=loss)
    else:  # torchattacks tries n_classes - 1 target classes
        ref = torchattacks.APGDT(view, norm=kind, eps=eps, steps=steps, n_classes=classes)
    theirs = ref(x, y)
    return robust_accuracy(reference, ours.x_adv, y), robust_accuracy(reference, theirs, y)


AGREEMENT = [  # budgets where robust accuracy is well inside (10%, 90%) on this model
    ("apgd", 0.08, "linf", "ce"),
    ("apgd", 0.08, "linf", "dlr"),
    ("apgd", 0.5, "l2", "ce"),
    ("apgd_t", 0.08, "linf", "dlr"),
]


@pytest.mark.parametrize(("method", "eps", "norm", "loss"), AGREEMENT)
def test_robust_accuracy_agrees_with_torchattacks(
    trained, reference, digits_test, method, eps, norm, loss
):
    """64 images, 30 steps (APGD-T: 3 target classes), so the file stays fast; the defaults are
    compared below (APGD-T's in the slow tier)."""
    x, y = digits_test[0][:64], digits_test[1][:64]
    ours, theirs = compare(trained, reference, x, y, method, eps, norm, 30, loss, classes=4)
    assert 0.1 < theirs < 0.9, theirs  # a budget where the attacks can disagree
    assert abs(ours - theirs) <= 4 / 64 + 1e-6, (ours, theirs)


@pytest.mark.parametrize(
    ("method", "eps", "norm", "loss"),
    [
        *AGREEMENT[:3],
        pytest.param(*AGREEMENT[3], marks=pytest.mark.slow),  # 9 x 100 steps: ~12 s
    ],
)
def test_robust_accuracy_agrees_with_torchattacks_at_the_defaults(
    trained, reference, digits_test, method, eps, norm, loss
):
    """100 images, 100 steps, APGD-T with 9 target classes (AutoAttack's settings)."""
    x, y = digits_test
    ours, theirs = compare(trained, reference, x, y, method, eps, norm, 100, loss, classes=10)
    assert 0.1 < theirs < 0.9, theirs
    assert abs(ours - theirs) <= 0.05 + 1e-6, (ours, theirs)


class Recorder(nn.Module):
    """The prediction view, keeping a copy of every batch it is asked about, in order."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.view = PredictionView(model)
        self.seen: list[torch.Tensor] = []
        self.eval()  # torchattacks restores the mode it found, for the wrapped model too

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.view(x)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_the_random_start_and_first_iterate_match_torchattacks_exactly(trained, digits_test, norm):
    """With the same seed, ours (the attack's generator) and torchattacks (the global RNG after
    its own manual_seed) draw the same start, and on this deterministic model the first step from
    it (step 2 eps along the steepest-ascent direction, projected) gives the same point: the
    second and third batches each side queries (after the clean one) are equal. A wrong step size,
    direction or projection, or a start drawn differently, fails."""
    x, y = digits_test[0][:16], digits_test[1][:16]
    eps = 0.08 if norm == "linf" else 0.5
    ours, theirs = Recorder(trained.model), Recorder(trained.model)
    APGD(ours, eps=eps, norm=norm, steps=5, loss="ce", seed=0)(x, y)
    kind = {"linf": "Linf", "l2": "L2"}[norm]
    torchattacks.APGD(theirs, norm=kind, eps=eps, steps=5, n_restarts=1, loss="ce", seed=0)(x, y)
    assert torch.equal(ours.seen[0], x) and torch.equal(theirs.seen[0], x)  # the clean check
    start, first = ours.seen[1], ours.seen[2]
    assert not torch.equal(start, x) and not torch.equal(first, start)
    torch.testing.assert_close(start, theirs.seen[1], rtol=0, atol=1e-6)
    torch.testing.assert_close(first, theirs.seen[2], rtol=0, atol=1e-6)
