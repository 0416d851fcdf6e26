"""scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes): the embedded default.

Pixel values 0..16 are scaled to [0, 1]. The dataset has no official test set, so a fixed,
stratified 20% split (seed 12345, independent of ``dataset.split_seed``) serves as one.
"""

from __future__ import annotations

from pathlib import Path

import torch

from robustctl.data.base import OPTIONS, DatasetConfig, RawSplit

TEST_FRACTION = 0.2
TEST_SPLIT_SEED = 12345


def load_digits_split(cfg: DatasetConfig, work_dir: str | Path) -> RawSplit:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.int64)
    train_idx, test_idx = train_test_split(
        range(len(y)), test_size=TEST_FRACTION, random_state=TEST_SPLIT_SEED, stratify=bunch.target
    )
    train_idx, test_idx = torch.tensor(train_idx), torch.tensor(test_idx)
    return RawSplit(
        x[train_idx],
        y[train_idx],
        x[test_idx],
        y[test_idx],
        tuple(str(d) for d in range(10)),
        source="scikit-learn:sklearn.datasets.load_digits",
    )


OPTIONS.add(DatasetConfig(name="digits"), load_digits_split)
