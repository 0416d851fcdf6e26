"""The masking is real and the tool sees through it: for a ResNet trained on digits behind each
input transform, PGD through the implementation's own gradient (``gradient=exact``, a naive
attacker) fails where PGD through BPDA (the default) succeeds. The low-pass filter (linear) and the
median (piecewise linear) have informative gradients, not masked ones: both settings give the
same, successful attack."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from robustctl.attacks import PGD
from robustctl.composition import compose
from robustctl.data import load_dataset
from robustctl.training import fit, load_checkpoint
from robustctl.training.checkpoint import model_from_checkpoint
from tests.runs import digits_overrides

# each transform at a setting that keeps digits recognisable; PGD budget shared by all
TRANSFORMS = {
    "jpeg": ["transform.quality=50"],
    "bit_depth": ["transform.bits=2"],
    "median": ["transform.size=2"],
    "lowpass": ["transform.keep=0.6"],
    "edges": ["transform.threshold=0.25"],
}
EPS, STEPS = 0.25, 20


def attack_success(model, x, y, gradient: str) -> float:
    """PGD's success rate on the correctly classified images, the transform's gradient set to
    ``gradient``."""
    transform = model.input_transform
    transform.config = replace(transform.config, gradient=gradient)
    with torch.no_grad():
        correct = model.predict_logits(x).argmax(1) == y
    result = PGD(model, eps=EPS, steps=STEPS, seed=0)(x[correct], y[correct])
    return result.success.float().mean().item()


@pytest.mark.parametrize(
    "name",
    # one transform in the fast tier, the others (~9 s each: a 12-epoch training) in the slow one
    [n if n == "jpeg" else pytest.param(n, marks=pytest.mark.slow) for n in sorted(TRANSFORMS)],
)
def test_bpda_attacks_what_the_naive_gradient_cannot(tmp_path, name):
    _, cfg = compose(
        digits_overrides(tmp_path, "trainer.epochs=12", f"transform={name}", *TRANSFORMS[name])
    )
    data = load_dataset(cfg.dataset, cfg.work_dir)
    result = fit(cfg, data, chash=name)
    model = result.model.eval()
    rebuilt = model_from_checkpoint(load_checkpoint(result.checkpoint))  # as `evaluate` does
    assert rebuilt.input_transform.config == model.input_transform.config
    x, y = data.x_test[:200], data.y_test[:200]
    with torch.no_grad():
        accuracy = (model.predict_logits(x).argmax(1) == y).float().mean().item()
        assert torch.equal(rebuilt.predict_logits(x), model.predict_logits(x))
    bpda = attack_success(model, x, y, "bpda")
    exact = attack_success(model, x, y, "exact")
    print(f"{name}: clean accuracy {accuracy:.3f}, PGD success bpda {bpda:.3f} exact {exact:.3f}")
    assert accuracy > 0.7  # the model still works behind its transform
    assert bpda > 0.9
    if name in ("lowpass", "median"):
        assert exact == bpda  # differentiable: BPDA is not used
    else:
        assert exact < 0.5 * bpda
