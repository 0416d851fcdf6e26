"""Run identity: the fingerprint groups seeds of one configuration and nothing else; the variant
names the loss options that depart from the paper's."""

from __future__ import annotations

import pytest

from robustctl.composition import compose
from robustctl.losses.schema import loss_variant
from robustctl.tracking.lifecycle import config_container, identity_tags


def tags(*overrides: str) -> dict[str, str]:
    raw, _ = compose(list(overrides))
    return identity_tags(config_container(raw))


def test_seeds_and_machine_settings_share_a_fingerprint():
    base = tags("loss=pdm")
    for same in (
        ["trainer.seed=3"],
        ["trainer.device=cpu", "trainer.num_threads=2"],
        ["tracking.experiment=elsewhere", "trainer.resume=true"],
        ["threat_model.batch_size=7"],
    ):
        assert tags("loss=pdm", *same) == base, same


@pytest.mark.parametrize(
    "changed, training_changes",
    [
        (["trainer.epochs=3"], True),
        (["model=resnet32"], True),
        (["loss.rvl_normalization=raw"], True),
        (["dataset.split_seed=1"], True),
        (["threat_model.num_samples=50"], False),
        (["threat_model.whitebox.steps=10"], False),
        (["threat_model.seed=1"], False),
        (["defense.per_class=50"], False),
    ],
)
def test_training_or_budget_changes_split_the_fingerprint(changed, training_changes):
    base, other = tags("loss=pdm"), tags("loss=pdm", *changed)
    assert other["fingerprint"] != base["fingerprint"]
    assert (other["training_fingerprint"] != base["training_fingerprint"]) == training_changes


def test_variant_names_departures_from_the_paper():
    # the default PDM normalizes RVL by the centroid distances; the paper's RVL is raw
    assert tags("loss=pdm")["variant"] == "rvl_normalization=centroid"
    assert tags("loss=pdm", "loss.rvl_normalization=raw")["variant"] == ""
    assert tags("loss=pdm", "loss.rvl_normalization=raw", "loss.q=0.3")["variant"] == "q=0.3"
    assert tags("loss=ce")["variant"] == ""
    assert loss_variant({"name": "unknown-loss", "x": 1}) == ""
