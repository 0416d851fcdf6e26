"""Data with an empty split is refused with a DataError naming what is empty, never trained or
evaluated into NaN accuracies."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from robustctl.cli import app
from robustctl.data import DatasetConfig, SyntheticDatasetConfig, load_dataset
from robustctl.errors import DataError
from tests.data.test_loaders import write_mnist_folder


@pytest.mark.parametrize("split, stem", [("test", "t10k"), ("train", "train")])
def test_an_idx_file_of_zero_images_is_refused_naming_the_file(tmp_path, split, stem):
    write_mnist_folder(tmp_path, **{f"n_{split}": 0})  # a valid header that says 0 images
    cfg = DatasetConfig(name="fashion_mnist", root=str(tmp_path))
    with pytest.raises(DataError, match=f"{stem}-images-idx3-ubyte.gz holds no images") as err:
        load_dataset(cfg, tmp_path)
    assert str(tmp_path) in str(err.value)


def test_a_split_that_leaves_validation_empty_is_refused_with_the_sizes(tmp_path):
    # 8 images: 2 test, 6 training -> a limit of 4, of which round(0.1 * 4) = 0 for validation
    cfg = SyntheticDatasetConfig(name="synthetic", num_samples=8, train_limit=4, test_limit=1)
    with pytest.raises(DataError) as err:
        load_dataset(cfg, tmp_path)
    assert "the val split is empty (train 4, val 0, test 1 images" in err.value.message
    assert "dataset.val_fraction" in err.value.hint and "dataset.num_samples" in err.value.hint
    # val_fraction=0 asks for no validation set: the same images are accepted
    cfg.val_fraction = 0.0
    assert load_dataset(cfg, tmp_path).sizes() == {"train": 4, "val": 0, "test": 1}


def test_a_split_that_leaves_training_empty_is_refused(tmp_path):
    cfg = SyntheticDatasetConfig(name="synthetic", num_samples=8, test_fraction=0.99)
    with pytest.raises(
        DataError, match=r"the train and val splits are empty \(train 0, val 0, test 8"
    ):
        load_dataset(cfg, tmp_path)


def test_the_cli_refuses_an_empty_split_with_exit_2_before_training(tiny, tmp_path):
    result = CliRunner().invoke(
        app, ["train", *tiny, "dataset.num_samples=8", "dataset.train_limit=4"]
    )
    assert result.exit_code == 2, result.output
    assert "val split is empty" in result.output and "Traceback" not in result.output
    assert "epoch" not in result.output  # refused before any training
