"""Threat models: C&W-wb breaches the KDE where plain C&W is caught; the threat stages end to
end."""

from __future__ import annotations

import pytest
import torch

from robustctl.attacks import build
from robustctl.defenses import fit_detector
from robustctl.defenses.base import AttackableDetector
from robustctl.errors import ConfigError
from robustctl.evaluation.detection import detection_auc
from robustctl.inference import predict
from robustctl.threat_models.cw_wb import CWWhiteBox


@pytest.fixture(scope="module")
def trained(target):
    cfg, model, data = target
    return model, fit_detector(cfg.defense, model, data), data


def evaluate(model, detector, x, y, x_adv):
    logits, emb = predict(model, x)
    clean_pred = logits.argmax(1)
    clean_scores = detector.score(emb, clean_pred).detach()
    adv_logits, adv_emb = predict(model, x_adv)
    adv_pred = adv_logits.argmax(1)
    adv_scores = detector.score(adv_emb, adv_pred).detach()
    return (
        clean_scores,
        adv_pred,
        adv_scores,
        detection_auc(clean_scores, adv_scores, y, clean_pred, adv_pred, min_pairs=4),
    )


@pytest.mark.slow
def test_cw_wb_evades_the_detector_that_catches_plain_cw(trained):
    model, detector, data = trained
    x, y = data.x_test[:16], data.y_test[:16]
    plain = build("cw", model, steps=60)(x, y)
    *_, plain_result = evaluate(model, detector, x, y, plain.x_adv)
    assert (
        plain_result.auc is not None and plain_result.auc >= 0.9
    )  # C&W examples sit in low-density regions

    wb = CWWhiteBox(model, detector, steps=200)(x, y)
    clean_scores, adv_pred, adv_scores, wb_result = evaluate(model, detector, x, y, wb.x_adv)
    evaded = wb.success & (adv_scores <= clean_scores + 1e-4)
    assert evaded.float().mean() >= 0.2
    # every example the attack reports as kept is misclassified AND scores below its own clean score
    assert torch.equal(wb.success, adv_pred != y)
    assert wb_result.auc is not None and wb_result.auc <= 0.6 < plain_result.auc


def test_cw_wb_needs_an_embedding_and_a_detector(trained):
    model, detector, _ = trained
    plain = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4))
    with pytest.raises(ConfigError, match="embed"):
        CWWhiteBox(plain, detector)
    with pytest.raises(ConfigError, match="defense=kde"):
        CWWhiteBox(model, None)
    assert isinstance(detector, AttackableDetector)
    scorer = torch.nn.Linear(64, 1)  # a module that scores images but offers no attack interface
    with pytest.raises(ConfigError, match="AttackableDetector interface"):
        CWWhiteBox(model, scorer)


def test_stage_that_needs_a_detector_refuses_defense_none(tiny):
    from typer.testing import CliRunner

    from robustctl.cli import app

    result = CliRunner().invoke(
        app, ["run", *tiny, "trainer.epochs=1", "threat_model=whitebox", "defense=none"]
    )
    assert result.exit_code == 2 and "defense=kde" in result.output


def test_cw_wb_judges_success_by_the_detectors_score_not_by_its_bound(trained):
    """The attack pushes the bound down, the detector decides with its score: an iterate whose
    score is under T counts even while the bound is still above it."""
    from robustctl.defenses.base import Detector, Probe

    model, _, data = trained

    def norms(x):
        with torch.no_grad():
            return Probe(model, x).embedding.norm(dim=1)

    class LooseBound(Detector):
        """Score: the embedding's norm (class-agnostic); bound: the score plus 1e6."""

        def score_probe(self, probe, classes):
            return probe.embedding.norm(dim=1)

        def score_bound(self, probe, toward):
            return self.score_probe(probe, toward) + 1e6

    x, y = data.x_test[:8], data.y_test[:8]
    threshold = float(norms(x).max()) * 10  # no score near it; every bound far above it
    detector = LooseBound()
    assert not detector.bound_is_score
    # lambda = 0: the detector term does not steer, so only the success rule is under test
    out = CWWhiteBox(model, detector, steps=100, lr=0.1, density_weight=0.0, thresholds=threshold)(
        x, y
    )
    assert out.success.all()  # every image misclassified: judged by the score
    assert bool((norms(out.x_adv) <= threshold).all())


def test_other_class_start_is_the_nearest_success_then_the_nearest_other_class(trained):
    """``start=other_class``: each image starts from the nearest pool image that already fools
    model and detector for it; without one, from the nearest of another class; else from itself."""
    from robustctl.threat_models.cw_wb import StartingPool, WbState

    model, detector, data = trained
    x = torch.zeros(3, 1, 8, 8)
    y = torch.tensor([0, 1, 2])
    images = torch.stack([torch.full((1, 8, 8), v) for v in (0.1, 0.2, 0.3, 0.4)])
    pool = StartingPool(
        images, predictions=torch.tensor([0, 1, 1, 2]), scores=torch.tensor([0.0, 5.0, 1.0, 0.0])
    )
    attack = CWWhiteBox(model, detector, start="other_class", pool=pool)
    state = WbState(
        torch.zeros(3), torch.tensor([2.0, 0.5, 0.5]), torch.zeros(3, 3, dtype=torch.bool)
    )
    starts = attack.starts(x, y, state)
    # image 0 (label 0, T 2): pool rows 1-3 are other classes; row 2 (0.3, score 1 <= 2) is the
    # nearest success (row 1 is nearer but scores 5)
    assert torch.equal(starts[0], images[2])
    # image 1 (label 1, T 0.5): successes are rows 0 (0.1, score 0) and 3 (0.4, score 0): row 0
    assert torch.equal(starts[1], images[0])
    # image 2 (label 2, T 0.5): rows 0-2 are other classes; only row 0 scores under T
    assert torch.equal(starts[2], images[0])
    # image 0 moving toward class 1 (every_class) with T 0.5: rows 1 and 2 predict 1, neither
    # scores under T; the nearest of them is row 1
    toward = WbState(state.threshold[:1], torch.tensor([0.5]), state.y_mask[:1], torch.tensor([1]))
    assert torch.equal(attack.starts(x[:1], y[:1], toward)[0], images[1])
    # no pool image of another class: the image itself
    alone = StartingPool(images[:1], torch.tensor([0]), torch.tensor([0.0]))
    lone = CWWhiteBox(model, detector, start="other_class", pool=alone)
    assert torch.equal(lone.starts(x[:1], y[:1], state.toward_class(torch.tensor([0]), 0)), x[:1])
    with pytest.raises(ValueError, match="pool"):
        CWWhiteBox(model, detector, start="other_class")


def test_the_starting_pool_is_training_images_with_their_scores(target, trained):
    from robustctl.defenses import score_images
    from robustctl.threat_models.cw_wb import CwWbConfig
    from robustctl.threat_models.whitebox import cw_wb_attack

    cfg, model, data = target
    _, detector, _ = trained
    attack = cw_wb_attack(CwWbConfig(start="other_class", start_pool=50), model, detector, data)
    pool = attack.pool
    assert len(pool.images) == 50
    train = {img.numpy().tobytes() for img in data.x_train}
    assert all(img.numpy().tobytes() in train for img in pool.images)  # never a test image
    predictions, scores = score_images(detector, model, pool.images)
    assert torch.equal(pool.predictions, predictions)
    torch.testing.assert_close(pool.scores, scores)


def test_the_starting_pool_leaves_out_the_detectors_reference_images():
    """LID holds training images as reference points: the other-class starting pool never
    contains them (asked for the whole training split, it gets the rest), and otherwise keeps the
    seeded order, so it still has ``start_pool`` images."""
    from robustctl.data.base import seeded_permutation
    from robustctl.defenses.lid import LIDDetector
    from robustctl.threat_models.cw_wb import CwWbConfig
    from robustctl.threat_models.whitebox import starting_pool
    from tests.defenses.test_mahalanobis import tiny_inputs

    model, inputs = tiny_inputs()
    data = inputs.data
    detector = LIDDetector(
        layers=["embedding"], k=5, reference_size=20, fit_samples=20, successful_only=False
    ).fit_on(inputs)
    held = detector.held_training_rows()
    assert held.shape == (20,)
    reference = {img.numpy().tobytes() for img in data.x_train[held]}

    def pool_of(size):
        wb = CwWbConfig(start="other_class", start_pool=size)
        return wb, starting_pool(wb, model, detector, data, 64, inputs.outputs)

    _, whole = pool_of(len(data.y_train))
    assert len(whole.images) == len(data.y_train) - 20
    assert not any(img.numpy().tobytes() in reference for img in whole.images)
    wb, small = pool_of(30)
    order = seeded_permutation(len(data.y_train), wb.seed or 0)
    assert torch.equal(small.images, data.x_train[order[~torch.isin(order, held)][:30]])
