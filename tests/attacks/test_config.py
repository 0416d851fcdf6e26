"""The ``attack`` config group: every option composes and builds; ranges are refused with
the key."""

from __future__ import annotations

import pytest

from robustctl.attacks import (
    ATTACKS,
    BimConfig,
    CwConfig,
    DeepFoolConfig,
    FgsmConfig,
    JsmaConfig,
    attack_options,
    build,
    build_from_config,
    presets,
)
from robustctl.composition import compose, group_options
from robustctl.config import config_dir
from robustctl.errors import ConfigError


def test_every_option_composes_named_and_builds_its_method(trained):
    options = group_options()["attack"]
    assert set(options) == {"none", *attack_options()}
    for name in options:
        _, cfg = compose([f"attack={name}"])
        assert cfg.attack.name == name
        if name != "none":
            attack = build_from_config(cfg.attack, trained.model)
            assert attack.name == name and type(attack.config) is type(cfg.attack)
            assert attack.config == cfg.attack  # composition and code build the same config


def test_presets_are_commented_yaml_that_extend_one_method():
    files = sorted((config_dir() / "attack").glob("*.yaml"))
    assert (
        {f.stem for f in files}
        == set(presets())
        == {"fgsm-0.05", "fgsm-0.1", "bim-0.05", "bim-0.1", "pgd-0.1", "pgd_l2"}
    )
    for path in files:
        assert path.read_text().startswith("#"), path
        method, values = presets()[path.stem]
        assert method in ATTACKS and values["name"] == path.stem


def test_paper_parameters():
    _, cfg = compose(["attack=fgsm-0.1"])
    assert cfg.attack.eps == 0.1
    _, cfg = compose(["attack=bim-0.05"])
    assert (cfg.attack.eps, cfg.attack.steps) == (0.05, 10)
    _, cfg = compose(["attack=cw"])
    assert (cfg.attack.binary_steps, cfg.attack.steps, cfg.attack.confidence, cfg.attack.lr) == (
        9,
        10,
        0.0,
        0.1,
    )
    _, cfg = compose(["attack=cw_hc"])
    assert (cfg.attack.binary_steps, cfg.attack.steps, cfg.attack.confidence, cfg.attack.lr) == (
        9,
        1000,
        10.0,
        0.01,
    )
    _, cfg = compose(["attack=jsma"])
    assert (cfg.attack.steps, cfg.attack.gamma, cfg.attack.theta, cfg.attack.targeted) == (
        100,
        0.1,
        1.0,
        "random",
    )


def test_build_by_name_with_overrides(trained):
    attack = build("bim-0.1", trained.model, steps=5)
    assert (attack.eps, attack.steps, attack.alpha, attack.step_size) == (
        0.1,
        5,
        None,
        pytest.approx(0.02),
    )
    assert set(attack_options()) >= {
        "fgsm",
        "fgsm-0.05",
        "fgsm-0.1",
        "bim",
        "bim-0.05",
        "bim-0.1",
        "pgd",
        "cw",
        "cw_hc",
        "jsma",
        "deepfool",
    }


@pytest.mark.parametrize(
    "make, key",
    [
        (lambda: FgsmConfig(eps=-0.1), "attack.eps"),
        (lambda: BimConfig(eps=0.1, steps=0), "attack.steps"),
        (lambda: CwConfig(confidence=-1.0), "attack.confidence"),
        (lambda: CwConfig(lr=0.0), "attack.lr"),
        (lambda: JsmaConfig(gamma=0.0), "attack.gamma"),
        (lambda: JsmaConfig(targeted="none"), "attack.targeted"),
        (lambda: DeepFoolConfig(targeted="random"), "attack.targeted"),
    ],
)
def test_schema_range_checks_name_the_key(make, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        make()


def test_negative_eps_is_refused_at_compose_and_build(trained):
    with pytest.raises(ConfigError, match=r"attack\.eps"):
        compose(["attack=fgsm-0.05", "attack.eps=-0.05"])
    with pytest.raises(ConfigError, match=r"attack\.eps"):
        build("pgd", trained.model, eps=-1)


def test_unknown_option_and_key_list_the_valid_ones(trained):
    with pytest.raises(ConfigError, match="deepfool"):
        build("lbfgs", trained.model)
    with pytest.raises(ConfigError, match="eps"):
        build("fgsm", trained.model, epsilon=0.1)
    with pytest.raises(ConfigError, match="valid attack options"):
        compose(["attack=lbfgs"])
