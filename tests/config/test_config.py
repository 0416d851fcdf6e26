"""Composition and validation: options, keys, ranges, and error messages that say what to do."""

from __future__ import annotations

import pytest

from robustctl.composition import compose, group_options, selected_options
from robustctl.errors import ConfigError


def test_default_config_composes_to_digits_resnet20_ce():
    raw, cfg = compose([])
    assert (cfg.dataset.name, cfg.model.name, cfg.loss.name) == ("digits", "resnet20", "ce")
    assert (
        cfg.model.depth == 20
        and cfg.model.activation == "leaky_relu"
        and cfg.model.negative_slope == 0.1
    )
    assert cfg.trainer.momentum == 0.9
    # the embedded default runs the whole pipeline: KDE detector + all three threat models, small
    # budgets
    assert (cfg.attack.name, cfg.defense.name, cfg.threat_model.name) == ("none", "kde", "quick")
    assert cfg.threat_model.stages == ["graybox", "whitebox", "blackbox"]
    assert cfg.threat_model.attack_params == {
        "cw_hc": {"steps": 100, "lr": 0.1},
        "square": {"queries": 300, "eps": 0.1},
        "hsj": {"queries": 1000, "steps": 20},
    }
    assert cfg.threat_model.blackbox.kind == "both"  # transfer and query-based


@pytest.mark.slow
def test_every_option_of_every_group_composes():
    for group, names in group_options().items():
        for name in names:
            _, cfg = compose([f"{group}={name}"])
            if hasattr(getattr(cfg, group), "name"):
                assert getattr(cfg, group).name == name


def test_group_options_match_the_issue():
    options = group_options()
    assert set(options["dataset"]) >= {"digits", "synthetic", "fashion_mnist", "mnist", "cifar10"}
    assert set(options["model"]) >= {"resnet14", "resnet20", "resnet32", "resnet56"}
    for group in ("attack", "defense", "threat_model"):
        assert "none" in options[group]


def test_unknown_dataset_lists_the_options():
    with pytest.raises(ConfigError) as err:
        compose(["dataset=imagenet"])
    message = str(err.value)
    for name in ("digits", "fashion_mnist", "mnist", "cifar10", "synthetic"):
        assert name in message


@pytest.mark.parametrize(
    "override, key",
    [
        ("trainer.lr=-0.1", "trainer.lr"),
        ("trainer.batch_size=0", "trainer.batch_size"),
        ("trainer.momentum=1.5", "trainer.momentum"),
        ("trainer.schedule=linear", "trainer.schedule"),
        ("trainer.device=tpu", "trainer.device"),
        ("model.depth=21", "model.depth"),
        ("dataset.val_fraction=1.0", "dataset.val_fraction"),
        ("threat_model.whitebox.toward=nearest", "threat_model.whitebox.toward"),
    ],
)
def test_out_of_range_values_are_refused_with_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        compose([override])


def test_wrong_type_is_refused():
    with pytest.raises(ConfigError, match="trainer"):
        compose(["trainer.epochs=many"])


def test_unknown_key_names_the_valid_keys():
    with pytest.raises(ConfigError) as err:
        compose(["trainer.learning_rate=0.1"])
    assert "lr" in str(err.value) and "epochs" in str(err.value)


def test_overrides_reach_the_typed_config(tmp_path):
    _, cfg = compose(
        ["dataset=fashion_mnist", "model=resnet56", "trainer.lr=0.05", f"work_dir={tmp_path}"]
    )
    assert cfg.dataset.name == "fashion_mnist" and cfg.model.depth == 56 and cfg.trainer.lr == 0.05
    assert cfg.work_dir == str(tmp_path.resolve())


def test_selected_options():
    raw, _ = compose(["model=resnet32"])
    from omegaconf import OmegaConf

    chosen = selected_options(OmegaConf.to_container(raw, resolve=True))
    assert (
        chosen["model"] == "resnet32"
        and chosen["dataset"] == "digits"
        and chosen["trainer"] == "default"
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["threat_model=graybox", "threat_model.attacks=[fgsm-0.1,jsmaa]"],
            "threat_model.attacks: unknown option 'jsmaa'",
        ),
        (
            ["threat_model=graybox", "+threat_model.attack_params.nope.steps=3"],
            "threat_model.attack_params.nope: unknown option",
        ),
        (
            ["threat_model=graybox", "+threat_model.attack_params.cw.stepz=3"],
            "unknown key(s) threat_model.attack_params.cw.stepz",
        ),
        (
            ["threat_model=graybox", "+threat_model.attack_params.cw.steps=-3"],
            "threat_model.attack_params.cw.steps: must be > 0",
        ),
        (
            ["threat_model=whitebox", "+threat_model.convergence.attack_max_doublings.cw=4"],
            "threat_model.convergence.attack_max_doublings: names white-box attacks",
        ),
    ],
)
def test_threat_model_attack_list_and_params_are_checked_at_composition(overrides, message):
    """A typo in the gray-box attack list must stop the run before training, not after it."""
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        compose(overrides)
    _, cfg = compose(["threat_model=graybox", "+threat_model.attack_params.cw.steps=3"])
    assert cfg.threat_model.attack_params == {"cw": {"steps": 3}}
    _, cfg = compose(
        ["threat_model=whitebox", "+threat_model.convergence.attack_max_doublings.fmn_wb=6"]
    )
    assert cfg.threat_model.convergence.attack_max_doublings == {"fmn_wb": 6}
