"""The adaptive attack against each detector (C&W-wb through model + detector): on a small
test model (a ResNet-8; LID on the package's ResNet-20, see ``ON_RESNET20``), the non-adaptive
C&W (gray-box) is detected (AUC > 0.9), and C&W-wb, which knows the detector, fools the
classifier on every attacked image and drives the AUC to <= 0.5.

Budget: Adam step 0.1, c from 10, on 20 images; 5 binary steps x 1000 iterations for the one
search toward the runner-up class (3 x 500 with Mahalanobis's input preprocessing, whose
iterations cost twice as much), 3 x 500 for each of the nine searches of ``every_class``
(measured: KDE reached 0.95 success at 3 x 500, so it keeps the full budget; BU, KD+BU and LID
were breached at 3 x 500 with AUC 0.44-0.46 in a trial run, and pass this test at it; these
budgets were set on the ResNet-20, and the ResNet-8 passes at them too).

``toward``: the class C&W-wb's detector term is taken under. The runner-up search leaves BU
(0.65 success) and KD+BU (0.925) short on this model: its images of one class are never breached
toward their runner-up class, where the dropout ensemble is never as certain as they are, and
all are toward another class; one search per class (``every_class``) breaches them all.
Mahalanobis is attacked with and without Lee et al.'s input preprocessing (through BPDA).

LID needs the search to start from a success (``start=other_class``: the nearest training image
that already fools model and detector for the image): from the clean image the detector term
keeps some images from ever crossing the boundary (0.55-0.75 success for either search), from
such a start with one search per class 19 of 20 are breached (all were while the pool held LID's
reference images, where the old neighbour rule made a start an easy success)."""

from __future__ import annotations

import dataclasses

import pytest

from robustctl.composition import compose
from robustctl.threat_models import run_threat_model
from robustctl.threat_models.convergence import ConvergenceConfig
from tests.threat_models.conftest import train_target


@pytest.fixture(scope="module")
def small_target(tmp_path_factory):
    """The package's target trained the same way, as a ResNet-8: every C&W-wb iteration is a
    forward and backward pass, 2.3x cheaper than ResNet-20's on these 8x8 images."""
    return train_target(tmp_path_factory.mktemp("adaptive"), "adaptive", "model=resnet8")


ADAPTIVE = [  # (defense overrides, C&W-wb toward, C&W-wb start, (binary steps, iterations))
    (["defense=kde"], "runner_up", "clean", (5, 1000)),
    (["defense=mahalanobis"], "runner_up", "clean", (5, 1000)),
    # each iteration pays a second gradient (the preprocessing, through BPDA): 3 x 500 breaches
    # all 20 too, in 108 s instead of 324 s at 5 x 1000 (CI, 2026-12-07)
    (["defense=mahalanobis", "defense.noise=0.01"], "runner_up", "clean", (3, 500)),
    (["defense=feature_squeezing"], "runner_up", "clean", (5, 1000)),
    (["defense=bu"], "every_class", "clean", (3, 500)),
    (["defense=kde_bu"], "every_class", "clean", (3, 500)),
    (["defense=lid"], "every_class", "other_class", (3, 500)),
]
# Each case runs on the ResNet-8 (small_target) but LID, on the package's ResNet-20 (target): on
# the ResNet-8 the same budget breaches 17 of 20 through LID (AUC 0.44), short of the 19 it
# breaches on the ResNet-20 (2026-12-08).
ON_RESNET20 = {("defense=lid",)}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("defense", "toward", "start", "budget"),
    ADAPTIVE,
    ids=lambda v: (
        "-".join(v) if isinstance(v, list) else v if isinstance(v, str) else "x".join(map(str, v))
    ),
)
def test_the_adaptive_attack_breaches_what_the_plain_attack_does_not(
    request, defense, toward, start, budget
):
    fixture = "target" if tuple(defense) in ON_RESNET20 else "small_target"
    cfg, model, data = request.getfixturevalue(fixture)
    _, composed = compose(defense)
    wb = dataclasses.replace(
        cfg.threat_model.whitebox,
        binary_steps=budget[0],
        steps=budget[1],
        lr=0.1,
        c_init=10.0,
        toward=toward,
        start=start,
    )
    tm = dataclasses.replace(
        cfg.threat_model,
        stages=["graybox", "whitebox"],
        attacks=["cw"],
        resiliency_attacks=[],
        num_samples=20,
        sanity_samples=0,
        whitebox=wb,
        # the breach at this budget is under test, not its convergence (test_convergence.py)
        whitebox_attacks=["cw_wb"],
        convergence=ConvergenceConfig(max_doublings=0),
    )
    run_cfg = dataclasses.replace(cfg, defense=composed.defense, threat_model=tm)
    metrics: dict[str, float] = {}
    for result in run_threat_model(run_cfg, model, data):
        metrics.update(result.metrics)
    assert metrics["graybox/cw/success_rate"] == 1.0
    assert metrics["graybox/cw/auc"] > 0.9, "the plain attack is detected"
    # LID: 19 of 20 since its reference images left the starting pool (a start on one of them
    # was an easy success only because the old neighbour rule jumped there); 4 binary steps
    # gave the same 19
    floor = 0.95 if defense == ["defense=lid"] else 1.0
    assert metrics["whitebox/cw_wb/success_rate"] >= floor, "the adaptive attack fools it"
    assert metrics["whitebox/cw_wb/auc"] <= 0.5, "and is not detected"
