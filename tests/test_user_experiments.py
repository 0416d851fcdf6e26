"""A user's own ``./experiments/NAME.yaml`` is found before the bundled experiments."""

from __future__ import annotations

import pytest

from robustctl.errors import ConfigError
from robustctl.experiments import available, load_experiment

MINE = """\
description: my own sweep
command: train
sweep:
  loss: [ce, rce]
overrides:
  - dataset=synthetic
"""


@pytest.fixture
def user_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "mine.yaml").write_text(MINE)
    return tmp_path / "experiments"


def test_an_experiment_in_the_working_directory_is_found(user_folder):
    exp = load_experiment("mine")
    assert (exp.command, exp.sweep, exp.overrides) == (
        "train",
        {"loss": ["ce", "rce"]},
        ["dataset=synthetic"],
    )
    assert {"mine", "smoke"} <= set(available())  # the user's beside the bundled ones


def test_the_users_file_shadows_a_bundled_one_of_the_same_name(user_folder):
    (user_folder / "smoke.yaml").write_text(MINE)
    assert load_experiment("smoke").description == "my own sweep"


def test_an_unknown_experiment_lists_both_folders_names(user_folder):
    with pytest.raises(ConfigError) as err:
        load_experiment("nope")
    message = str(err.value)
    assert "mine" in message and "smoke" in message
    assert str(user_folder) in message  # says where it looked
