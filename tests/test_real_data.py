"""Slow tests on real data (system tier: `make test-system`; `.ci/run` runs them, fatally)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from robustctl.cli import app
from robustctl.data.mnist_family import DEBIAN_FASHION_MNIST
from tests.test_cli import runs

needs_fashion = pytest.mark.skipif(
    not (DEBIAN_FASHION_MNIST / "t10k-images-idx3-ubyte.gz").is_file(),
    reason="apt-get install -y dataset-fashion-mnist",
)


@pytest.mark.slow
@needs_fashion
def test_fashion_mnist_one_epoch_resnet20_reaches_85_percent(tmp_path: Path):
    result = CliRunner().invoke(
        app,
        [
            "run",
            "dataset=fashion_mnist",
            "model=resnet20",
            "trainer.epochs=1",
            "threat_model=none",  # what the test asserts: training and the clean stage
            f"work_dir={tmp_path}",
        ],
    )
    assert result.exit_code == 0, result.output
    _, (run,) = runs(tmp_path)
    assert (
        run.data.params["data.train_size"] == "54000"
        and run.data.params["data.test_size"] == "10000"
    )
    assert run.data.metrics["clean/accuracy"] >= 0.85


@pytest.mark.slow
def test_default_digits_run_reaches_95_percent(tmp_path: Path):
    result = CliRunner().invoke(app, ["run", f"work_dir={tmp_path}"])
    assert result.exit_code == 0, result.output
    _, (run,) = runs(tmp_path)
    assert run.data.metrics["clean/accuracy"] >= 0.95
