"""Datasets: a registry from the ``dataset`` group's option name to a loader, and ``load_dataset``.

A loader is ``(cfg, work_dir) -> RawSplit``; ``load_dataset`` then applies the shared protocol:
``train_limit`` / ``test_limit`` subsets, the seeded train/validation split, the refusal of an
empty split and the format checks.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from robustctl.config.schema import DatasetConfig
from robustctl.data.base import (
    ImageData,
    RawSplit,
    check_images,
    check_split_sizes,
    iterate_batches,
    split_train_val,
    take,
)
from robustctl.data.cifar10 import load_cifar10
from robustctl.data.digits import load_digits_split
from robustctl.data.mnist_family import load_fashion_mnist, load_mnist
from robustctl.data.synthetic import load_synthetic_split
from robustctl.errors import ConfigError

LOADERS: dict[str, Callable[..., RawSplit]] = {
    "digits": load_digits_split,
    "synthetic": load_synthetic_split,
    "fashion_mnist": load_fashion_mnist,
    "mnist": load_mnist,
    "cifar10": load_cifar10,
}


def load_dataset(cfg: DatasetConfig, work_dir: str | Path = ".") -> ImageData:
    if cfg.name not in LOADERS:
        raise ConfigError(
            f"dataset: unknown option {cfg.name!r} — valid: {', '.join(sorted(LOADERS))}"
        )
    raw = LOADERS[cfg.name](cfg, work_dir)
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


__all__ = ["LOADERS", "ImageData", "RawSplit", "iterate_batches", "load_dataset"]
