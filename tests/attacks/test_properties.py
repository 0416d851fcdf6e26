"""Property tests (hypothesis): bounded attacks stay in the box and the eps-ball for any eps, batch,
seed and target mode, and their success mask is what a separately built, never-attacked copy of the
model says about the returned batch."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from robustctl.attacks import build

BOUNDED = ["fgsm", "bim", "pgd", "pgd_l2"]


@settings(max_examples=30, deadline=None)
@given(
    method=st.sampled_from(BOUNDED),
    eps=st.floats(0.001, 0.5),
    seed=st.integers(0, 2**16),
    start=st.integers(0, 40),
    n=st.integers(1, 8),
    targeted=st.sampled_from(["none", "random", "least_likely"]),
    saturate=st.booleans(),
)
def test_bounded_attacks_stay_in_box_and_ball(
    trained, reference, method, eps, seed, start, n, targeted, saturate
):
    x, y = trained.x[start : start + n].clone(), trained.y[start : start + n]
    if saturate:  # pixels at exactly 0 and 1 must stay in the box too
        x = (x * 3 - 1).clamp(0, 1)
    params = {"eps": eps * (8 if method == "pgd_l2" else 1), "seed": seed, "targeted": targeted}
    if method in ("bim", "pgd", "pgd_l2"):
        params["steps"] = 3
    if method == "pgd":
        params["restarts"] = 2
    attack = build(method, trained.model, **params)
    result = attack(x, y)
    assert result.x_adv.shape == x.shape and result.x_adv.dtype == torch.float32
    assert result.x_adv.min() >= 0 and result.x_adv.max() <= 1
    delta = (result.x_adv - x).flatten(1)
    if method == "pgd_l2":
        assert (delta.norm(dim=1) <= attack.eps * (1 + 1e-5) + 1e-6).all()
    else:
        assert delta.abs().max() <= attack.eps + 1e-6
    # judged by the reference copy, not the attacked model (re-predicting with it is how __call__
    # computes success)
    with torch.no_grad():
        pred = reference.predict_logits(result.x_adv).argmax(1)
    expected = pred != y if targeted == "none" else pred == result.target
    assert torch.equal(result.success, expected)
    if targeted == "random":
        assert (result.target != y).all()
