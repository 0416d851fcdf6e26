"""The in-memory dataset every loader returns, and the batching the trainer and evaluators share.

Conventions (docs/method.md section 1): images are float32 tensors in [0, 1], shape [N, C, H, W];
labels are int64 in [0, K). Normalization lives inside the model, so attacks measure distortion in
pixel space.
The validation split is carved from the training set with a seeded permutation, so the same
``dataset.split_seed`` always yields the same split.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from robustctl.config.registry import OptionRegistry
from robustctl.config.validation import require
from robustctl.errors import DataError

# the ``dataset`` group's options: each loader module adds its own (config, loader)
OPTIONS: OptionRegistry = OptionRegistry("dataset")


@dataclass
class DatasetConfig:
    """Where the images come from and how the training set is split.

    ``root`` null means the dataset's default location (see ``robustctl.data``). ``train_limit``
    and ``test_limit`` take a seeded random subset (quick runs); ``val_fraction`` of the training
    set is held out, deterministically from ``split_seed``.
    """

    name: str = "digits"
    root: str | None = None
    download: bool = False
    val_fraction: float = 0.1
    split_seed: int = 0
    train_limit: int | None = None
    test_limit: int | None = None
    augment: bool = False

    def __post_init__(self) -> None:
        require(
            0 <= self.val_fraction < 1,
            "dataset.val_fraction",
            f"must be in [0, 1), got {self.val_fraction}",
        )
        for key in ("train_limit", "test_limit"):
            value = getattr(self, key)
            require(
                value is None or value > 0,
                f"dataset.{key}",
                f"must be positive or null, got {value}",
            )


@dataclass
class RawSplit:
    """What a loader returns: the dataset's own train and test sets."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    class_names: tuple[str, ...]
    source: str = ""  # where the images were read from (a folder, a package's bundled data)


@dataclass
class ImageData:
    """Train / validation / test tensors of one dataset, ready for training and evaluation."""

    name: str
    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    x_test: Tensor
    y_test: Tensor
    class_names: tuple[str, ...]
    augment: bool = False
    source: str = ""  # the loader's RawSplit.source: logged as the MLflow dataset source

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)}

    def content_hash(self) -> str:
        """Short SHA-256 of every tensor: two runs with the same hash saw the same data."""
        digest = hashlib.sha256()
        for t in (self.x_train, self.y_train, self.x_val, self.y_val, self.x_test, self.y_test):
            digest.update(t.contiguous().numpy().tobytes())
        return digest.hexdigest()[:12]


def check_images(x: Tensor, y: Tensor, where: str) -> None:
    """Refuse data that breaks the conventions above (wrong rank, range, dtype or length)."""
    if x.ndim != 4:
        raise DataError(f"{where}: images must be [N, C, H, W], got shape {tuple(x.shape)}")
    if x.dtype != torch.float32:
        raise DataError(f"{where}: images must be float32, got {x.dtype}")
    if len(x) != len(y):
        raise DataError(f"{where}: {len(x)} images but {len(y)} labels")
    if len(x) and (x.min() < 0 or x.max() > 1):
        raise DataError(
            f"{where}: pixel values must lie in [0, 1], got [{x.min():.3g}, {x.max():.3g}]"
        )
    if y.dtype != torch.int64:
        raise DataError(f"{where}: labels must be int64, got {y.dtype}")


def seeded_permutation(n: int, seed: int) -> Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def take(x: Tensor, y: Tensor, limit: int | None, seed: int) -> tuple[Tensor, Tensor]:
    """A seeded random subset of at most ``limit`` examples (all of them when ``limit`` is None)."""
    if limit is None or limit >= len(y):
        return x, y
    idx = seeded_permutation(len(y), seed)[:limit]
    return x[idx], y[idx]


def split_train_val(
    x: Tensor, y: Tensor, val_fraction: float, seed: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Hold out ``round(val_fraction * N)`` training examples, chosen by a seeded permutation."""
    n_val = int(round(val_fraction * len(y)))
    idx = seeded_permutation(len(y), seed)
    val, train = idx[:n_val], idx[n_val:]
    return x[train], y[train], x[val], y[val]


def check_split_sizes(where: str, sizes: dict[str, int], val_fraction: float) -> None:
    """Refuse a split that leaves the training or test set without an image, or the validation
    set without one although ``dataset.val_fraction`` asks for it (0 means no validation set):
    accuracies over nothing are NaN and a model trained on nothing is no result."""
    need = {"train": 1, "val": 1 if val_fraction > 0 else 0, "test": 1}
    short = [split for split, least in need.items() if sizes.get(split, 0) < least]
    if not short:
        return
    shown = ", ".join(f"{split} {sizes.get(split, 0)}" for split in ("train", "val", "test"))
    raise DataError(
        f"{where}: the {' and '.join(short)} split{'s are' if len(short) > 1 else ' is'} empty "
        f"({shown} images; dataset.val_fraction={val_fraction}): every split needs at least "
        "one image",
        hint="use more images (dataset.num_samples for synthetic data, a larger or no "
        "dataset.train_limit / dataset.test_limit), or other fractions (dataset.val_fraction, "
        "0 for no validation set; dataset.test_fraction for synthetic data)",
    )


def crop_flip(x: Tensor, generator: torch.Generator | None, pad: int = 4) -> Tensor:
    """Standard CIFAR augmentation: random crop after ``pad`` px zero padding, random horizontal
    flip. Runs on ``x``'s device (``generator`` must live there too) without a host sync."""
    n, _, h, w = x.shape
    dev = x.device
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=dev)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=dev)
    rows = dy.view(n, 1) + torch.arange(h, device=dev).view(1, h)  # [n, h]
    cols = dx.view(n, 1) + torch.arange(w, device=dev).view(1, w)  # [n, w]
    out = padded[
        torch.arange(n, device=dev).view(n, 1, 1, 1),
        torch.arange(x.shape[1], device=dev).view(1, -1, 1, 1),
        rows.view(n, 1, h, 1),
        cols.view(n, 1, 1, w),
    ]
    flip = torch.rand(n, generator=generator, device=dev) < 0.5
    return torch.where(flip.view(n, 1, 1, 1), out.flip(-1), out)


def iterate_batches(
    x: Tensor,
    y: Tensor,
    batch_size: int,
    *,
    generator: torch.Generator | None = None,
    augment: bool = False,
    max_batches: int | None = None,
) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """Yield ``(images, labels, indices)``; shuffled when a generator is given, in order
    otherwise. Shuffling and augmentation run on ``x``'s device (the generator's device)."""
    n = len(y)
    order = (
        torch.randperm(n, generator=generator, device=x.device)
        if generator is not None
        else torch.arange(n, device=x.device)
    )
    for b, start in enumerate(range(0, n, batch_size)):
        if max_batches is not None and b >= max_batches:
            return
        idx = order[start : start + batch_size]
        xb = x[idx]
        if augment and generator is not None:
            xb = crop_flip(xb, generator)
        yield xb, y[idx], idx
