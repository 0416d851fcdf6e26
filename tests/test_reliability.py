"""Bad input gets one clear error through the CLI: property tests over overrides, ids,
checkpoints."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from robustctl.cli import app
from robustctl.training import save_checkpoint

runner = CliRunner()

keys = st.sampled_from(
    [
        "trainer.lr",
        "trainer.epochs",
        "trainer.batch_size",
        "defense.per_class",
        "loss.q",
        "threat_model.num_samples",
        "attack.eps",
        "dataset.val_fraction",
        "model.depth",
    ]
)
values = st.one_of(
    st.integers(-3, 100),
    st.floats(-2, 2, allow_nan=False).map(lambda v: round(v, 3)),
    st.sampled_from(["abc", "null", "1e-3", "[1,2]", ""]),
)
groups = st.sampled_from(["loss=pdm", "attack=fgsm", "defense=kde", "loss=ce", "attack=none"])


@pytest.mark.slow
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(group=groups, key=keys, value=values)
def test_any_override_is_a_valid_config_or_one_clean_error(group, key, value):
    result = runner.invoke(app, ["config", group, f"{key}={value}"])
    assert result.exit_code in (0, 2), result.output
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        assert result.output.startswith("error:") and len(result.output.strip().splitlines()) <= 6


def test_unknown_run_id_says_it_does_not_exist(tiny):
    result = runner.invoke(app, ["evaluate", *tiny, "evaluate.run_id=0123456789abcdef"])
    assert (
        result.exit_code == 2
        and "does not exist" in result.output
        and "Traceback" not in result.output
    )


def test_checkpoint_whose_weights_do_not_match_its_model_is_refused(tiny, tmp_path):
    from robustctl.models import ResNet

    bogus = save_checkpoint(
        {
            "meta": {
                "model": {
                    "name": "resnet32",
                    "depth": 32,
                    "width": 16,
                    "activation": "leaky_relu",
                    "negative_slope": 0.1,
                },
                "num_classes": 4,
                "in_channels": 1,
                "dataset": "synthetic",
            },
            "model": ResNet(depth=20, num_classes=4, in_channels=1).state_dict(),
        },
        tmp_path / "bogus.pt",
    )
    result = runner.invoke(app, ["evaluate", *tiny, f"evaluate.checkpoint={bogus}"])
    assert (
        result.exit_code == 2
        and "does not match" in result.output
        and "Traceback" not in result.output
    )


def test_truncated_checkpoint_through_the_cli(tiny, tmp_path):
    path = save_checkpoint({"model": {"w": torch.ones(10_000)}}, tmp_path / "t.pt")
    path.write_bytes(path.read_bytes()[:500])
    result = runner.invoke(app, ["evaluate", *tiny, f"evaluate.checkpoint={path}"])
    assert result.exit_code == 2 and "truncated or corrupt" in result.output


def test_the_divergence_hint_is_printed_once_with_debug(tiny):
    result = runner.invoke(app, ["train", "--debug", *tiny, "trainer.lr=1e6"])
    assert result.exit_code == 3, result.output
    assert "Traceback" in result.output and "loss became" in result.output
    assert result.output.count("hint: lower trainer.lr") == 1
