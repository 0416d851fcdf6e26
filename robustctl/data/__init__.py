"""Datasets: the ``dataset`` group's options (:data:`OPTIONS`: option -> its config and its
loader, added by each loader's module; every module of this package is imported here) and
``load_dataset``.

A loader is ``(cfg, work_dir) -> RawSplit``; ``load_dataset`` then applies the shared protocol:
``train_limit`` / ``test_limit`` subsets, the seeded train/validation split, the refusal of an
empty split and the format checks.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from robustctl.data.base import (
    OPTIONS,
    DatasetConfig,
    ImageData,
    RawSplit,
    check_images,
    check_split_sizes,
    iterate_batches,
    split_train_val,
    take,
)
from robustctl.data.synthetic import SyntheticDatasetConfig

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


def load_dataset(cfg: DatasetConfig, work_dir: str | Path = ".") -> ImageData:
    raw = OPTIONS.implementation(cfg.name)(cfg, work_dir)
    x_train, y_train = take(raw.x_train, raw.y_train, cfg.train_limit, cfg.split_seed)
    x_test, y_test = take(raw.x_test, raw.y_test, cfg.test_limit, cfg.split_seed + 1)
    x_train, y_train, x_val, y_val = split_train_val(
        x_train, y_train, cfg.val_fraction, cfg.split_seed
    )
    check_split_sizes(
        cfg.name, {"train": len(y_train), "val": len(y_val), "test": len(y_test)}, cfg.val_fraction
    )
    for where, (x, y) in {
        "train": (x_train, y_train),
        "val": (x_val, y_val),
        "test": (x_test, y_test),
    }.items():
        check_images(x, y, f"{cfg.name}/{where}")
    return ImageData(
        cfg.name,
        x_train,
        y_train,
        x_val,
        y_val,
        x_test,
        y_test,
        raw.class_names,
        augment=cfg.augment,
        source=raw.source,
    )


__all__ = [
    "OPTIONS",
    "DatasetConfig",
    "ImageData",
    "RawSplit",
    "SyntheticDatasetConfig",
    "iterate_batches",
    "load_dataset",
]
