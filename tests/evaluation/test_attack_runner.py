"""Attack runs for evaluation: the suite's metrics and outcomes, resiliency curves, BIM gradient
norms, figures."""

from __future__ import annotations

import math

import pytest
import torch
from matplotlib.figure import Figure

from robustctl.attacks import FGSM, CwConfig, DeepFool
from robustctl.attacks.metrics import distortion_metrics
from robustctl.evaluation.attack_runner import run_attack_suite
from robustctl.evaluation.figures import adversarial_confusion_figure, example_grid_figure
from robustctl.evaluation.gradient_path import bim_gradient_norms
from robustctl.evaluation.resiliency import resiliency_curve, resiliency_figure


@pytest.fixture(scope="module")
def data(trained):
    """48 correctly classified examples plus 4 relabelled ones the model gets 'wrong'."""
    x = torch.cat([trained.x, trained.x[:4]])
    y = torch.cat([trained.y, (trained.y[:4] + 1) % 10])
    return x, y


def test_suite_outcomes_and_metric_names(trained, data):
    x, y = data
    specs = ["fgsm-0.1", CwConfig(binary_steps=2, steps=5), DeepFool(trained.model, name="df")]
    outcomes = run_attack_suite(trained.model, x, y, specs, batch_size=20, progress=True)
    assert list(outcomes) == ["fgsm-0.1", "cw", "df"]
    metrics = {k: v for outcome in outcomes.values() for k, v in outcome.metrics.items()}
    for name in outcomes:
        for key in ("success_rate", "distortion", "l2", "linf", "l0"):
            assert f"graybox/{name}/{key}" in metrics
    fgsm = outcomes["fgsm-0.1"]
    # batch by batch (3 batches) gives what one call on the whole set gives
    whole = FGSM(trained.model, eps=0.1)(x, y)
    assert torch.equal(fgsm.x_adv, whole.x_adv) and torch.equal(fgsm.success, whole.success)
    correct = fgsm.clean_pred == y
    assert correct.sum() == 48
    assert metrics["graybox/fgsm-0.1/success_rate"] == pytest.approx(
        float(fgsm.success[:48].float().mean())
    )
    assert torch.equal(fgsm.adversarial, fgsm.success & correct)
    expected = distortion_metrics(x, fgsm.x_adv, fgsm.adversarial)
    assert metrics["graybox/fgsm-0.1/distortion"] == pytest.approx(expected["distortion"])
    assert metrics["graybox/fgsm-0.1/linf"] == pytest.approx(0.1, abs=1e-6)
    assert metrics["graybox/df/success_rate"] == 1.0
    assert outcomes["df"].seconds > 0


def test_suite_without_any_adversarial_example_reports_nan(trained):
    outcomes = run_attack_suite(
        trained.model,
        trained.x[:5],
        trained.y[:5],
        [FGSM(trained.model, eps=1e-4)],
        batch_size=8,
        progress=False,
    )
    metrics = outcomes["fgsm"].metrics
    assert metrics["graybox/fgsm/success_rate"] == 0.0 and math.isnan(metrics["graybox/fgsm/l2"])


def test_resiliency_curve(trained):
    eps = [0.025, 0.05, 0.1, 0.2]
    curve = resiliency_curve(
        trained.model, trained.x, trained.y, "bim", eps_list=eps, batch_size=32, progress=False
    )
    assert list(curve) == [
        "resiliency/bim/eps_0.025",
        "resiliency/bim/eps_0.05",
        "resiliency/bim/eps_0.1",
        "resiliency/bim/eps_0.2",
    ]
    values = list(curve.values())
    assert values == sorted(values, reverse=True) and values[0] > values[-1]
    from robustctl.attacks import BIM

    direct = BIM(trained.model, eps=0.1)(trained.x, trained.y)
    assert curve["resiliency/bim/eps_0.1"] == pytest.approx(
        float((direct.pred == trained.y).float().mean())
    )
    default = resiliency_curve(trained.model, trained.x[:8], trained.y[:8], "fgsm", progress=False)
    assert len(default) == 8 and "resiliency/fgsm/eps_0.125" in default
    fig = resiliency_figure({**curve, **default})
    assert isinstance(fig, Figure) and len(fig.axes[0].lines) == 2


def test_bim_gradient_norms(trained):
    trace = bim_gradient_norms(
        trained.model, trained.x, trained.y, eps=0.1, steps=10, batch_size=20
    )
    assert set(trace) == {
        "bim_path/bim-0.1/embedding_grad_norm",
        "bim_path/bim-0.1/input_grad_norm",
    }
    embed = trace["bim_path/bim-0.1/embedding_grad_norm"]
    assert len(embed) == 11 and all(v > 0 for v in embed)
    # step 0 is the clean input: mean ||dCE/dz||_2 computed by hand
    z = trained.model.embed(trained.x).detach().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(trained.model.head(z), trained.y, reduction="sum")
    (gz,) = torch.autograd.grad(loss, z)
    assert embed[0] == pytest.approx(gz.norm(dim=1).mean().item(), rel=1e-4)
    assert embed[-1] > 2 * embed[0]  # walking out of the class cluster, the gradient grows


def test_figures(trained):
    orig = torch.tensor([0, 0, 1, 2, 2, 2])
    adv = torch.tensor([1, 2, 0, 1, 1, 0])
    fig = adversarial_confusion_figure(orig, adv, ["a", "b", "c"])
    assert isinstance(fig, Figure)
    assert fig.axes[0].get_xlabel() == "adversarial class" and "n=6" in fig.axes[0].get_title()
    image = fig.axes[0].images[0].get_array()
    assert image[2, 1] == pytest.approx(2 / 3) and image[0, 0] == 0
    x = torch.rand(5, 3, 8, 8)
    fig = example_grid_figure(
        x, (x + 0.1).clamp(0, 1), torch.arange(5), torch.arange(5).flip(0), n=4
    )
    assert isinstance(fig, Figure) and len(fig.axes) == 12
    grey = example_grid_figure(trained.x, trained.x.flip(0), class_names=trained.class_names)
    assert len(grey.axes) == 24
    import matplotlib.pyplot as plt

    plt.close("all")


def test_targeted_attack_counts_misclassification_and_logs_target_rate_apart():
    """One meaning of adversarial: clean-correct and adv_pred != y, for success, distortion and
    AUC pairs alike; a targeted attack's hits on its target are target_rate."""
    from robustctl.evaluation.attack_runner import attack_metrics
    from robustctl.evaluation.detection import pair_mask

    x = torch.zeros(4, 1, 2, 2)
    x_adv = x.clone()
    x_adv[0] += 0.2  # distortion L2/sqrt(4) = 0.2
    x_adv[1] += 0.4  # 0.4
    x_adv[2] += 0.6  # attack failed: still class 0
    x_adv[3] += 0.8  # clean image already misclassified: ignored
    labels = torch.tensor([0, 0, 0, 0])
    clean_pred = torch.tensor([0, 0, 0, 1])
    adv_pred = torch.tensor([2, 1, 0, 2])  # 0 reached its target 2; 1 misclassified elsewhere
    target = torch.tensor([2, 2, 2, 2])
    m = attack_metrics("jsma", x, x_adv, labels, clean_pred, adv_pred, target)
    assert m["graybox/jsma/success_rate"] == pytest.approx(2 / 3)
    assert m["graybox/jsma/clean_correct"] == 3
    assert m["graybox/jsma/target_rate"] == pytest.approx(1 / 3)
    assert m["graybox/jsma/distortion"] == pytest.approx(0.3)  # mean of 0.2 and 0.4
    # the success rate counts exactly the examples the AUC pairs
    assert int(pair_mask(labels, clean_pred, adv_pred).sum()) == 2
    # Wilson 95% interval of 2 of 3
    assert (m["graybox/jsma/success_rate_ci_low"], m["graybox/jsma/success_rate_ci_high"]) == (
        pytest.approx((0.2077, 0.9385), abs=5e-4)
    )
    lo, hi = m["graybox/jsma/distortion_ci_low"], m["graybox/jsma/distortion_ci_high"]
    assert 0.2 - 1e-6 <= lo <= 0.3 <= hi <= 0.4 + 1e-6
    untargeted = attack_metrics("fgsm", x, x_adv, labels, clean_pred, adv_pred)
    assert "graybox/fgsm/target_rate" not in untargeted
