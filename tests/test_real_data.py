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
def test_the_debian_fashion_mnist_gives_the_official_splits(tmp_path: Path):
    from robustctl.composition import compose
    from robustctl.data import load_dataset

    _, cfg = compose(["dataset=fashion_mnist", f"work_dir={tmp_path}"])
    data = load_dataset(cfg.dataset, cfg.work_dir)
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (54000, 6000, 10000)
    assert data.x_train.shape[1:] == (1, 28, 28)
    assert 0.0 <= float(data.x_train.min()) and float(data.x_train.max()) <= 1.0
    assert sorted(data.y_test.bincount().tolist()) == [1000] * 10  # the balanced test split


@pytest.mark.slow
@needs_fashion
def test_fashion_mnist_one_epoch_on_20000_images_reaches_75_percent(tmp_path: Path):
    """Training and the clean stage on the real files, on a budget CI affords (67 s here): a
    ResNet-8, one epoch on 20,000 of the training images, 5,000 test images; 0.778 measured
    (2026-12-08). A ResNet-20 on all 54,000 images reaches 0.85 in one epoch, in 4 minutes."""
    result = CliRunner().invoke(
        app,
        [
            "run",
            "dataset=fashion_mnist",
            "model=resnet8",
            "trainer.epochs=1",
            "dataset.train_limit=20000",
            "dataset.test_limit=5000",
            "threat_model=none",  # what the test asserts: training and the clean stage
            f"work_dir={tmp_path}",
        ],
    )
    assert result.exit_code == 0, result.output
    _, (run,) = runs(tmp_path)
    assert run.data.params["data.train_size"] == "18000"  # 20,000 less the validation tenth
    assert run.data.params["data.test_size"] == "5000"
    assert run.data.metrics["clean/accuracy"] >= 0.75


@pytest.mark.slow
def test_default_digits_run_reaches_95_percent(tmp_path: Path):
    result = CliRunner().invoke(app, ["run", f"work_dir={tmp_path}"])
    assert result.exit_code == 0, result.output
    _, (run,) = runs(tmp_path)
    assert run.data.metrics["clean/accuracy"] >= 0.95
