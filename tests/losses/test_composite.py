"""Composite losses (siamese_rvl, pdm, center, contrastive_center): registry, config validation,
term bookkeeping, and the Siamese interface."""

from __future__ import annotations

import pytest
import torch

from robustctl.composition import compose, group_options
from robustctl.errors import ConfigError
from robustctl.losses import OPTIONS as LOSS_OPTIONS
from robustctl.losses import Pairs, build_loss
from robustctl.losses.reduce_variance import reduce_variance_loss
from robustctl.losses.reverse_cross_entropy import reverse_cross_entropy
from robustctl.losses.schema import CenterLossConfig, PDMLossConfig
from robustctl.losses.siamese import siamese_cosine_loss
from robustctl.models.base import ModelOutput

OPTIONS = ["ce", "rce", "siamese_rvl", "pdm", "center", "contrastive_center"]
SIGN = {
    "ce": 1.0,
    "rce": -1.0,
    "siamese_rvl": 1.0,
    "pdm": -1.0,
    "center": 1.0,
    "contrastive_center": 1.0,
}


def test_every_option_is_registered_once_with_a_constructor():
    assert list(LOSS_OPTIONS) == OPTIONS
    assert set(group_options()["loss"]) == set(LOSS_OPTIONS)
    for name, cfg in LOSS_OPTIONS.configs().items():
        assert cfg.name == name
        assert callable(LOSS_OPTIONS.implementation(name))


@pytest.mark.parametrize("name", OPTIONS)
def test_every_option_composes_and_builds(name):
    _, cfg = compose([f"loss={name}"])
    loss = build_loss(cfg.loss)
    assert loss.logit_sign == SIGN[name]
    assert loss.needs_pairs == (name in ("siamese_rvl", "pdm"))


@pytest.mark.parametrize(
    "override, key",
    [
        (["loss=pdm", "loss.q=1.5"], "loss.q"),
        (["loss=pdm", "loss.q=-0.1"], "loss.q"),
        (["loss=siamese_rvl", "loss.rvl_weight=-1"], "loss.rvl_weight"),
        (["loss=pdm", "loss.siamese_weight=-0.5"], "loss.siamese_weight"),
        (["loss=pdm", "loss.rvl_normalization=l2"], "loss.rvl_normalization"),
        (["loss=pdm", "loss.classification=ce"], "loss.classification"),
        (["loss=rce", "loss.weight=0"], "loss.weight"),
        (["loss=center", "loss.center_weight=-1"], "loss.center_weight"),
        (["loss=center", "loss.center_alpha=0"], "loss.center_alpha"),
        (["loss=contrastive_center", "loss.delta=0"], "loss.delta"),
        (["loss=ce", "loss.q=0.3"], "loss.q"),  # a key the option does not have
    ],
)
def test_bad_values_are_refused_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        compose(override)


def _outputs(
    seed: int = 0, n: int = 6, k: int = 3, d: int = 4
) -> tuple[ModelOutput, torch.Tensor, Pairs]:
    g = torch.Generator().manual_seed(seed)
    out = ModelOutput(
        torch.randn(n, k, generator=g), torch.randn(n, d, generator=g, requires_grad=True)
    )
    out_p = ModelOutput(
        torch.randn(n, k, generator=g), torch.randn(n, d, generator=g, requires_grad=True)
    )
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    partner_labels = torch.tensor([0, 2, 2, 1, 1, 0])
    return out, labels, Pairs(out_p, partner_labels, (labels == partner_labels).float())


@pytest.mark.parametrize("norm", ["raw", "centroid", "unit"])
def test_pdm_total_is_the_weighted_sum_of_its_terms(norm):
    cfg = PDMLossConfig(
        name="pdm",
        classification="rce",
        weight=0.7,
        siamese_weight=0.3,
        rvl_weight=0.2,
        rvl_normalization=norm,
    )
    loss = build_loss(cfg)
    out, y, pairs = _outputs()
    result = loss(out, y, pairs=pairs)
    assert set(result.terms) == {"rce", "siamese", "rvl"}
    # Algorithm 1: both halves are classified; RVL sees the embeddings of both halves
    rce = 0.7 * (
        reverse_cross_entropy(out.logits, y).mean()
        + reverse_cross_entropy(pairs.output.logits, pairs.labels).mean()
    )
    sl = 0.3 * siamese_cosine_loss(out.embedding, pairs.output.embedding, pairs.same)
    rvl = 0.2 * reduce_variance_loss(
        torch.cat([out.embedding, pairs.output.embedding]), torch.cat([y, pairs.labels]), norm
    )
    assert result.terms["rce"].item() == pytest.approx(rce.item(), rel=1e-6)
    assert result.terms["siamese"].item() == pytest.approx(sl.item(), rel=1e-6)
    assert result.terms["rvl"].item() == pytest.approx(rvl.item(), rel=1e-6)
    assert result.total.item() == pytest.approx((rce + sl + rvl).item(), rel=1e-6)
    result.total.backward()
    assert pairs.output.embedding.grad is not None and pairs.output.embedding.grad.abs().sum() > 0


def test_siamese_loss_refuses_to_run_without_pairs():
    loss = build_loss(PDMLossConfig(name="siamese_rvl"))
    out, y, _ = _outputs()
    with pytest.raises(ValueError, match="pairs"):
        loss(out, y)


def test_zero_weights_switch_terms_off():
    loss = build_loss(PDMLossConfig(name="siamese_rvl", siamese_weight=0.0, rvl_weight=0.5))
    assert not loss.needs_pairs
    out, y, _ = _outputs()
    assert set(loss(out, y).terms) == {"ce", "rvl"}
    center = build_loss(CenterLossConfig(name="center", center_weight=0.0))
    assert set(center(out, y).terms) == {"ce"}


@pytest.mark.parametrize("name", ["center", "contrastive_center"])
def test_center_buffers_are_sized_from_the_outputs_and_restored_from_a_state_dict(name):
    _, cfg = compose([f"loss={name}"])
    loss = build_loss(cfg.loss)
    out, y, _ = _outputs()  # K = 3 logits, D = 4, classes 0..2 present
    loss(out, y)
    centers = loss.state_dict()[f"embedding_terms.{name}.centers"]
    assert centers.shape == (3, 4) and centers.abs().sum() > 0
    fresh = build_loss(cfg.loss)
    fresh.load_state_dict(loss.state_dict())
    assert torch.equal(fresh.state_dict()[f"embedding_terms.{name}.centers"], centers)
    y_first_two = torch.tensor([0, 1, 0, 1, 0, 1])  # K still comes from the logits, not the labels
    assert build_loss(cfg.loss)(out, y_first_two).terms[name].isfinite()
    assert build_loss(cfg.loss).state_dict()[f"embedding_terms.{name}.centers"].numel() == 0


def test_center_with_rce_predicts_with_negated_logits():
    loss = build_loss(CenterLossConfig(name="center", classification="rce"))
    assert loss.logit_sign == -1.0
    out, y, _ = _outputs()
    assert torch.allclose(loss.sample_losses(out, y), reverse_cross_entropy(out.logits, y))
