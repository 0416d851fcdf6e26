"""C&W L2 and C&W-hc: unbounded success, the binary search's bookkeeping, confidence, early
abort."""

from __future__ import annotations

import torch
from torch import nn

from robustctl.attacks import CW, CWHighConfidence, DeepFool
from robustctl.attacks.cw import margins
from robustctl.attacks.metrics import per_example_distortions


def test_cw_reaches_full_success_with_enough_iterations(trained):
    x, y = trained.x[:32], trained.y[:32]
    result = CW(trained.model, binary_steps=5, steps=60, lr=0.05, c_init=1.0)(x, y)
    assert result.success.float().mean() >= 0.95
    # Was ``mean L2 < 2.4`` (4.4x the measured 0.54: a doubled distortion passed). Now against
    # DeepFool on the same examples (exact on affine models, matched to torchattacks on this
    # ResNet): measured 1.19x.
    deepfool = DeepFool(trained.model)(x, y)
    both = result.success & deepfool.success
    l2 = lambda r: per_example_distortions(x, r.x_adv)["l2"][both].mean()  # noqa: E731
    assert both.sum() >= 28 and l2(result) < 1.35 * l2(deepfool)


def test_failures_return_the_clean_image(trained):
    result = CW(trained.model, binary_steps=1, steps=2, c_init=1e-4)(trained.x, trained.y)
    assert not result.success.all()
    torch.testing.assert_close(
        result.x_adv[~result.success], trained.x[~result.success], atol=1e-6, rtol=0
    )


def test_binary_search_keeps_each_examples_smallest_success(trained):
    """The first binary step is identical in both runs; later steps may only shrink each
    example's L2."""
    x, y = trained.x[:32], trained.y[:32]
    one = CW(trained.model, binary_steps=1, steps=30, lr=0.05, c_init=10.0)(x, y)
    many = CW(trained.model, binary_steps=5, steps=30, lr=0.05, c_init=10.0)(x, y)
    l2_one = per_example_distortions(x, one.x_adv)["l2"]
    l2_many = per_example_distortions(x, many.x_adv)["l2"]
    assert one.success.sum() > 10
    assert (many.success | ~one.success).all()
    assert (l2_many[one.success] <= l2_one[one.success] + 1e-6).all()
    assert (
        l2_many[one.success].mean() < 0.9 * l2_one[one.success].mean()
    )  # the search does shrink c


def test_high_confidence_successes_clear_the_margin(trained):
    x, y = trained.x[:12], trained.y[:12]
    hc = CWHighConfidence(trained.model, binary_steps=2, steps=100, lr=0.1, c_init=1.0)
    assert (hc.steps, hc.confidence) == (100, 10.0) and CWHighConfidence(
        trained.model
    ).steps == 1000
    result = hc(x, y)
    assert result.success.float().mean() > 0.9
    with torch.no_grad():
        z_y, z_other = margins(trained.model.predict_logits(result.x_adv), y)
    assert (z_other - z_y)[result.success].min() > 10 - 1e-3
    low = CW(trained.model, binary_steps=2, steps=100, lr=0.1, c_init=1.0)(x, y)
    both = result.success & low.success
    l2 = lambda r: per_example_distortions(x, r.x_adv)["l2"][both].mean()  # noqa: E731
    assert l2(result) > l2(low)


class Counting(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.calls = model, 0
        self.train(model.training)

    def forward(self, x):
        self.calls += 1
        return self.model.predict_logits(x)


def test_abort_early_stops_when_the_loss_stops_improving(trained):
    x, y = trained.x[:8], trained.y[:8]
    runs = {}
    for abort in (False, True):
        counting = Counting(trained.model)
        result = CW(counting, binary_steps=2, steps=100, lr=0.05, c_init=10.0, abort_early=abort)(
            x, y
        )
        runs[abort] = (counting.calls, result)
    assert runs[False][0] == 2 * 100 + 1  # every iteration, plus the final re-check
    assert runs[True][0] < 2 * 100 * 0.5
    assert runs[True][1].success.sum() >= runs[False][1].success.sum() - 1


def test_default_step_makes_the_papers_ten_iterations_count(trained):
    """At the paper's budget (9 binary steps x 10 iterations) the default Adam step (0.1) must
    find adversarial examples where Carlini's 0.01 (meant for 1000+ iterations) barely moves the
    image."""
    slow = CW(trained.model, lr=0.01)(trained.x, trained.y)
    default = CW(trained.model)(trained.x, trained.y)
    assert default.success.float().mean() >= 0.8
    assert default.success.float().mean() >= slow.success.float().mean() + 0.3
