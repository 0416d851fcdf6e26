"""The detector-aware attacks' optimizers on the tiny digits model: FMN-wb's minimal distortions
against an independent minimal-perturbation attack (torchattacks' DeepFool), C&W-wb's
per-example abort, and restarts from incumbents."""

from __future__ import annotations

import pytest
import torch
import torchattacks

from robustctl.defenses.base import Detector
from robustctl.threat_models.cw_wb import CWWhiteBox
from robustctl.threat_models.fmn_wb import FMNWhiteBox
from tests.conftest import fresh_copy


class AcceptsAll(Detector):
    """A detector that never rejects (score 0, the caller's threshold 1): the detector-aware
    attacks become plain minimum-norm attacks on the classifier."""

    def score_probe(self, probe, classes):
        return probe.embedding.sum(1) * 0.0

    def score_bound(self, probe, toward):
        return self.score_probe(probe, toward)


@pytest.fixture(scope="module")
def trained(tiny_digits_model):
    return fresh_copy(tiny_digits_model)


class PredictionView(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.predict_logits(x)


def l2(a, b):
    return (a - b).flatten(1).norm(dim=1)


def test_fmn_wb_finds_distortions_as_small_as_deepfool(trained):
    """With a detector that accepts everything, FMN-wb is FMN-L2: every image breached, and its
    median L2 no more than 10% above that of torchattacks' DeepFool-L2 (an independent
    implementation of the minimal-perturbation attack, overshoot 0.02) on the images DeepFool
    fools."""
    x, y = trained.x[:24], trained.y[:24]
    ours = FMNWhiteBox(trained.model, AcceptsAll(), steps=200, thresholds=1.0)(x, y)
    assert ours.success.all()
    theirs = torchattacks.DeepFool(PredictionView(trained.model), steps=50, overshoot=0.02)(x, y)
    with torch.no_grad():
        fooled = trained.model.predict_logits(theirs).argmax(1) != y
    # DeepFool's linear steps are cut by the box on the saturated 8x8 digits: compare on the
    # images it fooled
    assert fooled.sum() >= 6
    ours_median = float(l2(ours.x_adv[fooled], x[fooled]).median())
    theirs_median = float(l2(theirs[fooled], x[fooled]).median())
    assert ours_median <= 1.1 * theirs_median, (ours_median, theirs_median)


def test_cw_wb_per_example_abort_makes_each_result_independent_of_its_batch(trained):
    """With the per-example abort each example stops on its own loss: an image attacked alone
    and in a batch gets the same adversarial example, at fewer passes than the batch rule; the
    batch rule (one abort for all) ties an example to its batch."""
    x, y = trained.x[:12], trained.y[:12]
    params = dict(binary_steps=2, steps=60, lr=0.1, thresholds=1.0)
    batch = CWWhiteBox(trained.model, AcceptsAll(), **params)
    together = batch(x, y)
    for i in (0, 5):
        alone = CWWhiteBox(trained.model, AcceptsAll(), **params)(x[i : i + 1], y[i : i + 1])
        assert torch.allclose(alone.x_adv[0], together.x_adv[i], atol=1e-5)
    whole = CWWhiteBox(trained.model, AcceptsAll(), per_example_abort=False, **params)
    whole(x, y)
    assert batch.passes < whole.passes == 12 * 2 * 60 or batch.passes < whole.passes


@pytest.mark.parametrize("cls", [CWWhiteBox, FMNWhiteBox])
def test_a_restart_from_incumbents_never_ends_above_them(trained, cls):
    """Each image's incumbent is the search's first iterate: the result is at most as far from
    the image as its incumbent (the ladder's restarts can only improve)."""
    x, y = trained.x[:10], trained.y[:10]
    first = (
        cls(trained.model, AcceptsAll(), steps=100, lr=0.1, thresholds=1.0)(x, y)
        if (cls is CWWhiteBox)
        else cls(trained.model, AcceptsAll(), steps=100, thresholds=1.0)(x, y)
    )
    assert first.success.all()
    incumbents = first.x_adv
    again = cls(trained.model, AcceptsAll(), steps=2, thresholds=1.0)(x, y, start=incumbents)
    assert again.success.all()
    assert bool((l2(again.x_adv, x) <= l2(incumbents, x) + 1e-4).all())


def test_fmn_restart_steps_scale_with_each_incumbent_and_only_there(trained):
    """On a restart, an image starting from its incumbent takes steps of restart_step * its
    incumbent's norm / alpha_init (at most the schedule's); an image without one keeps the
    schedule. Hand values: incumbent norms 0.5 and 20 at restart_step 0.1, alpha_init 1."""
    x, y = trained.x[:3], trained.y[:3]
    attack = FMNWhiteBox(trained.model, AcceptsAll(), steps=1, thresholds=1.0, restart_step=0.1)
    attack.from_incumbent = torch.tensor([True, True, False])
    scale = attack.step_scale(torch.tensor([0.5, 20.0, 3.0]))
    assert torch.allclose(scale, torch.tensor([0.05, 1.0, 1.0]))
    attack.from_incumbent = None  # a first run: no incumbents
    assert torch.equal(attack.step_scale(torch.tensor([0.5, 20.0, 3.0])), torch.ones(3))
    # the mask comes from starts(): rows whose incumbent is a misclassified change of the image
    wrong = x.clone()
    wrong[0] = x[1] if y[1] != y[0] else x[2]
    attack(x, y, start=wrong)
    predicted = trained.model.predict_logits(wrong[:1]).argmax(1)
    assert attack.from_incumbent.tolist() == [bool(predicted != y[0]), False, False]


def test_fmn_restart_keeps_the_incumbent_direction(trained):
    """A restart's first step stays within restart_step of its incumbent's norm, and the
    schedule's full step (alpha_init = 1) without it goes farther: the refinement that lets the
    ladder converge. The second iterate is read where the objective is evaluated. An
    unreachable confidence (kappa = 50) keeps the incumbents short of success, so the step is a
    gradient step (at a success the objective is flat and FMN only shrinks); at restart_step
    0.01, |delta_1| <= 1.01 |delta_0| < eps_1 = 1.05 |delta_0|: no projection, and the box clip
    only brings it closer, so |delta_1 - delta_0| <= 0.01 |delta_0|."""
    x, y = trained.x[:10], trained.y[:10]
    first = FMNWhiteBox(trained.model, AcceptsAll(), steps=100, thresholds=1.0)(x, y)
    incumbents = first.x_adv
    moved = {}
    for restart_step in (0.01, None):
        attack = FMNWhiteBox(
            trained.model,
            AcceptsAll(),
            steps=2,
            thresholds=1.0,
            confidence=50.0,
            restart_step=restart_step,
        )
        seen = []
        terms = attack.iteration_terms

        def spy(x_adv, *args, terms=terms, seen=seen):
            seen.append(x_adv.detach().clone())
            return terms(x_adv, *args)

        attack.iteration_terms = spy
        attack(x, y, start=incumbents)
        assert torch.allclose(seen[0], incumbents)
        moved[restart_step] = l2(seen[1], incumbents)
    bound = 0.01 * l2(incumbents, x)
    assert bool((moved[0.01] <= bound + 1e-5).all())
    assert bool((moved[None] > 3 * bound).float().mean() >= 0.8)
