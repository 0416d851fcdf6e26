"""``threat_model.attacks=[]`` with the graybox stage is refused at composition, not run empty."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from robustctl.cli import app
from robustctl.composition import compose
from robustctl.errors import ConfigError


@pytest.mark.parametrize("preset", ["graybox", "quick", "all"])
def test_no_attacks_for_the_graybox_stage_is_a_config_error(preset):
    with pytest.raises(
        ConfigError, match=r"^threat_model\.attacks: .*needs at least one attack"
    ) as err:
        compose([f"threat_model={preset}", "threat_model.attacks=[]"])
    assert "threat_model.attacks=[" in err.value.hint and "threat_model.stages" in err.value.hint


def test_the_cli_refuses_it_with_exit_2(tiny):
    result = CliRunner().invoke(
        app, ["train", *tiny, "threat_model=graybox", "threat_model.attacks=[]"]
    )
    assert result.exit_code == 2, result.output
    assert "threat_model.attacks" in result.output and "Traceback" not in result.output
    assert "epoch" not in result.output  # refused before training
