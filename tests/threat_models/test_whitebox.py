"""Threat models: C&W-wb breaches the KDE where plain C&W is caught; the threat stages end to
end."""

from __future__ import annotations

import pytest
import torch

from robustctl.attacks import build
from robustctl.attacks.cw_wb import CWWhiteBox
from robustctl.defenses import fit_detector
from robustctl.errors import ConfigError
from robustctl.evaluation.detection import detection_auc
from robustctl.inference import predict


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
