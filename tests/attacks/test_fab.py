"""FAB / FAB-T (robustctl/attacks/fab.py): the exact hyperplane projection against hand-computed
steps and torchattacks' port of the authors' solver, FAB's step on an affine model (where the
linearization is exact), the eps rule and the target protocol, and robust accuracy against
torchattacks' FAB at equal settings."""

from __future__ import annotations

import pytest
import torch
import torchattacks
from torch import nn
from torchattacks.attacks.fab import projection_l2, projection_linf

from robustctl.attacks import build
from robustctl.attacks.fab import FAB, FABT, FabConfig, FabTConfig, project_onto_hyperplane
from robustctl.errors import ConfigError
from robustctl.models import PredictionView
from tests.conftest import robust_accuracy


# ------------------------------------------------------------------------------- projection
@pytest.mark.parametrize(
    ("p", "w", "b", "norm", "expected"),
    [
        ([0.5, 0.5], [1.0, 0.0], 0.8, "linf", [0.3, 0.0]),  # only the useful coordinate moves
        ([0.5, 0.5], [1.0, 1.0], 1.4, "l2", [0.2, 0.2]),
        ([0.5, 0.5], [1.0, 1.0], 1.4, "linf", [0.2, 0.2]),
        ([0.5, 0.5], [2.0, 1.0], 1.0, "l2", [-0.2, -0.1]),  # c = -0.5: d = c w / ||w||^2
        ([0.5, 0.5], [2.0, 1.0], 1.0, "linf", [-1 / 6, -1 / 6]),  # 3 t = 0.5
        # the box binds: the first coordinate has 0.1 of room, the second takes the rest
        ([0.9, 0.5], [1.0, 1.0], 1.8, "l2", [0.1, 0.3]),
        ([0.9, 0.5], [1.0, 1.0], 1.8, "linf", [0.1, 0.3]),
        ([0.5], [1.0], 2.0, "l2", [0.5]),  # out of reach: the box point closest to it
        ([0.5, 0.2], [1.0, -1.0], 0.3, "linf", [0.0, 0.0]),  # already on the hyperplane
    ],
)
def test_projection_matches_hand_computed_steps(p, w, b, norm, expected):
    d = project_onto_hyperplane(torch.tensor([p]), torch.tensor([w]), torch.tensor([b]), norm)
    assert torch.allclose(d, torch.tensor([expected]), atol=1e-6), d


@pytest.mark.parametrize(
    ("norm", "reference", "q"),
    [("linf", projection_linf, float("inf")), ("l2", projection_l2, 2.0)],
)
def test_projection_matches_torchattacks_on_random_hyperplanes(norm, reference, q):
    g = torch.Generator().manual_seed(0)
    n, dim = 200, 30
    p = torch.rand(n, dim, generator=g)
    w = torch.randn(n, dim, generator=g)
    w[:, :5] = 0.0  # coordinates the hyperplane ignores
    b = (w * torch.rand(n, dim, generator=g)).sum(1)  # a point of the box lies on each
    ours = project_onto_hyperplane(p, w, b, norm)
    theirs = reference(p.clone(), w.clone(), b.clone())
    assert torch.allclose((w * (p + ours)).sum(1), b, atol=1e-4)  # on the hyperplane
    assert (p + ours).min() >= -1e-6 and (p + ours).max() <= 1 + 1e-6  # in the box
    assert torch.allclose(ours.norm(p=q, dim=1), theirs.norm(p=q, dim=1), rtol=1e-3, atol=1e-5)
    assert (ours[:, :5] == 0).all()


def test_projection_is_the_smallest_step_among_random_feasible_ones():
    """A brute-force check: no random point of the box on the hyperplane is closer."""
    g = torch.Generator().manual_seed(1)
    p, w = torch.rand(1, 3, generator=g), torch.randn(1, 3, generator=g)
    b = (w * torch.rand(1, 3, generator=g)).sum(1)
    for norm, q in (("linf", float("inf")), ("l2", 2.0)):
        best = project_onto_hyperplane(p, w, b, norm).norm(p=q).item()
        v = torch.rand(20000, 3, generator=g)
        v[:, 2] = (b - (w[0, :2] * v[:, :2]).sum(1)) / w[0, 2]  # solve for the last coordinate
        ok = (v[:, 2] >= 0) & (v[:, 2] <= 1)
        assert ok.sum() > 100
        assert (v[ok] - p).norm(p=q, dim=1).min().item() >= best - 1e-6


# ----------------------------------------------------------------------------------- config
def test_config_defaults_are_autoattacks_and_ranges_are_checked():
    cfg = FabTConfig()
    assert (cfg.steps, cfg.alpha_max, cfg.eta, cfg.beta, cfg.n_target_classes) == (
        100,
        0.1,
        1.05,
        0.9,
        9,
    )
    for bad in ({"beta": 1.0}, {"alpha_max": 1.5}, {"steps": 0}, {"targeted": "random"}):
        with pytest.raises(ConfigError):
            FabConfig(**bad)
    assert isinstance(build("fab_t", nn.Linear(1, 1), eps=0.1), FABT)


# --------------------------------------------------------------------------- on an affine model
class Affine(nn.Module):
    """Two classes, logits (0, w . x + c): the boundary is the hyperplane w . x + c = 0."""

    def __init__(self, w: torch.Tensor, c: float):
        super().__init__()
        self.w, self.c = nn.Parameter(w.clone()), nn.Parameter(torch.tensor(c))

    def forward(self, x):
        margin = (x.flatten(1) * self.w).sum(1) + self.c
        return torch.stack([torch.zeros_like(margin), margin], 1)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fab_finds_the_exact_minimal_distance_on_an_affine_model(norm):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(12, generator=g)
    x = torch.rand(16, 1, 3, 4, generator=g) * 0.6 + 0.2
    model = Affine(w, 0.0)
    with torch.no_grad():
        model.c.fill_(-float((x.flatten(1) @ w).max()) - 0.1)  # every image is class 0
    y = torch.zeros(16, dtype=torch.long)
    attack = FAB(model, eps=1.0 if norm == "linf" else 5.0, norm=norm, steps=30)
    result = attack(x, y)
    exact = project_onto_hyperplane(
        x.flatten(1), w.expand(16, -1), torch.full((16,), -float(model.c.detach())), norm
    )
    q = float("inf") if norm == "linf" else 2.0
    assert result.success.all()
    # the overshoot (1.05) then the backward steps (0.9) bring it within a few percent
    ratio = attack.last_distances / exact.norm(p=q, dim=1)
    assert (ratio >= 1 - 1e-4).all() and (ratio <= 1.06).all(), ratio


def test_distances_decide_success_at_eps(trained, digits_test):
    x, y = digits_test[0][:48], digits_test[1][:48]
    attack = FABT(trained.model, eps=0.1, steps=20, n_target_classes=2)
    result = attack(x, y)
    with torch.no_grad():
        clean_ok = trained.model.predict_logits(x).argmax(1) == y
    inside = attack.last_distances <= 0.1
    assert torch.equal(result.success, inside | ~clean_ok)
    assert (attack.last_distances[~clean_ok] == 0).all()
    assert ((result.x_adv - x).flatten(1).abs().amax(1) <= 0.1 + 1e-6).all()
    assert result.success.any() and not result.success.all()


def test_fab_t_runs_toward_the_ranked_classes(trained, digits_test, monkeypatch):
    x, y = digits_test[0][:16], digits_test[1][:16]
    attack = FABT(trained.model, eps=1e-3, steps=2, n_target_classes=3)  # nothing breaks
    seen = []
    original = attack.run_once

    def recording(x_, y_, target, random_start):
        seen.append((target.clone(), random_start))
        return original(x_, y_, target, random_start)

    monkeypatch.setattr(attack, "run_once", recording)
    attack(x, y)
    with torch.no_grad():
        order = trained.model.predict_logits(x).argsort(1, descending=True)
    correct = order[:, 0] == y
    assert len(seen) == 3
    for k, (target, random_start) in enumerate(seen):
        assert torch.equal(target, order[correct, k + 1]) and not random_start


def test_rce_model_is_attacked_through_its_prediction_view(trained, rce_twin, digits_test):
    x, y = digits_test[0][:16], digits_test[1][:16]
    ours = FABT(trained.model, eps=0.1, steps=10, n_target_classes=2)(x, y)
    twin = FABT(rce_twin, eps=0.1, steps=10, n_target_classes=2)(x, y)
    assert torch.allclose(ours.x_adv, twin.x_adv, atol=1e-5)


# --------------------------------------------------------------------------- vs torchattacks
@pytest.mark.parametrize(
    ("method", "norm", "eps"),
    [("fab_t", "linf", 0.06), ("fab_t", "l2", 0.4), ("fab", "linf", 0.06)],
)
def test_robust_accuracy_agrees_with_torchattacks(
    trained, reference, digits_test, method, norm, eps
):
    """64 images, 20 steps (FAB-T: 3 target classes); both start at the image, so only float
    differences of the projections separate them."""
    x, y = digits_test[0][:64], digits_test[1][:64]
    extra = {"n_target_classes": 3} if method == "fab_t" else {}
    ours = build(method, trained.model, eps=eps, norm=norm, steps=20, **extra)(x, y)
    kind = {"linf": "Linf", "l2": "L2"}[norm]
    ref = torchattacks.FAB(
        PredictionView(trained.model),
        norm=kind,
        eps=eps,
        steps=20,
        multi_targeted=method == "fab_t",
        n_classes=4,  # torchattacks tries n_classes - 1 targets
    )
    theirs = ref(x, y)
    a_ours = robust_accuracy(reference, ours.x_adv, y)
    a_theirs = robust_accuracy(reference, theirs, y)
    assert 0.1 < a_theirs < 0.9, a_theirs
    assert abs(a_ours - a_theirs) <= 3 / 64 + 1e-6, (a_ours, a_theirs)
