"""The training variant (report column labels) and the hashes of the optional groups: naming what
departs from the paper's training, and leaving the hashes of configs without a transform or a
training-time defense as they were before those groups existed."""

from __future__ import annotations

from robustctl.composition import compose
from robustctl.tracking.lifecycle import config_container
from robustctl.tracking.provenance import config_hash, training_fingerprint
from robustctl.training.variant import training_variant


def container(*overrides: str) -> dict:
    raw, _ = compose(list(overrides))
    return config_container(raw)


def test_the_paper_setting_has_no_variant():
    assert training_variant(container()) == ""
    assert training_variant(container("loss=pdm")) == "rvl_normalization=centroid"


def test_every_departure_is_named():
    variant = training_variant(
        container(
            "model.norm=group",
            "transform=jpeg",
            "transform.quality=40",
            "train_defense=fgsm_at",
            "train_defense.mix=1.0",
        )
    )
    assert (
        variant == "norm=group, transform=jpeg(quality=40), train_defense=fgsm_at(eps=0.1, mix=1.0)"
    )
    naive = training_variant(container("transform=bit_depth", "transform.gradient=exact"))
    assert naive == "transform=bit_depth(bits=3, gradient=exact)"
    assert (
        training_variant(container("train_defense=pgd_at"))
        == "train_defense=pgd_at(eps=0.1, steps=7)"
    )


def test_none_options_of_the_new_groups_leave_the_hashes_unchanged():
    with_groups = container()
    assert with_groups["transform"] == {"name": "none"}
    without = {k: v for k, v in with_groups.items() if k not in ("transform", "train_defense")}
    assert config_hash(with_groups) == config_hash(without)
    assert training_fingerprint(with_groups) == training_fingerprint(without)
    for option in ("transform=median", "train_defense=fgsm_at"):
        assert config_hash(container(option)) != config_hash(with_groups)
