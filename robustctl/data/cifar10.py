"""CIFAR-10 from its python pickles (``cifar-10-batches-py``), downloaded through torchvision.

Folders searched: ``dataset.root/cifar-10-batches-py``, ``dataset.root`` itself, then
``<work_dir>/data/cifar-10-batches-py``. Files: ``data_batch_1..5``, ``test_batch``,
``batches.meta``; each batch is a dict with ``data`` (uint8 [N, 3072], row-major RGB planes) and
``labels``.

The pickles are read with a restricted unpickler that admits only numpy's array constructors, so
a tampered file cannot run code. torchvision's ``CIFAR10`` is used to download (it verifies MD5).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robustctl.data.base import OPTIONS, DatasetConfig, RawSplit
from robustctl.errors import DataError

FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
CLASS_NAMES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # protocol-2 bytes
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"forbidden global {module}.{name}")


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch -> (images uint8 [N, 3, 32, 32], labels int64 [N])."""
    try:
        with open(path, "rb") as fh:
            batch = _SafeUnpickler(fh, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, OSError, ValueError) as exc:
        raise DataError(f"cannot read CIFAR-10 batch {path}: {exc}") from exc
    if not isinstance(batch, dict):
        raise DataError(f"{path}: not a CIFAR-10 batch (expected a dict)")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise DataError(f"{path}: CIFAR-10 batch lacks 'data' or 'labels'")
    data = np.asarray(batch["data"], dtype=np.uint8)
    labels = np.asarray(batch["labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise DataError(
            f"{path}: data {data.shape} / labels {labels.shape} are not CIFAR-10 shaped"
        )
    return data.reshape(-1, 3, 32, 32), labels


def candidate_folders(cfg: DatasetConfig, work_dir: str | Path) -> list[Path]:
    folders = []
    if cfg.root:
        root = Path(cfg.root).expanduser()
        folders += [root / FOLDER, root]
    folders.append(Path(work_dir, "data", FOLDER))
    return list(dict.fromkeys(folders))


def _complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in (*TRAIN_FILES, TEST_FILE))


def load_cifar10(cfg: DatasetConfig, work_dir: str | Path) -> RawSplit:
    folders = candidate_folders(cfg, work_dir)
    found = next((f for f in folders if _complete(f)), None)
    if found is None and cfg.download:
        import torchvision

        root = Path(cfg.root).expanduser() if cfg.root else Path(work_dir, "data")
        try:
            torchvision.datasets.CIFAR10(str(root), train=True, download=True)
        except Exception as exc:
            raise DataError(f"downloading CIFAR-10 into {root} failed: {exc}") from exc
        found = next((f for f in folders if _complete(f)), None)
    if found is None:
        looked = "\n    ".join(str(f) for f in folders)
        raise DataError(
            f"CIFAR-10 python batches not found. Looked in:\n    {looked}",
            hint=(
                "set dataset.root to the folder holding cifar-10-batches-py, "
                "or add dataset.download=true (needs internet)"
            ),
        )
    parts = [read_batch(found / name) for name in TRAIN_FILES]
    x_test, y_test = read_batch(found / TEST_FILE)
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    if max(y_train.max(initial=0), y_test.max(initial=0)) >= 10:
        raise DataError(f"{found}: labels outside 0..9")

    def to_float(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.copy()).float().div_(255.0)

    return RawSplit(
        to_float(x_train),
        torch.from_numpy(y_train),
        to_float(x_test),
        torch.from_numpy(y_test),
        CLASS_NAMES,
        source=str(found.resolve()),
    )


# random crop + flip, as the paper trains
OPTIONS.add(DatasetConfig(name="cifar10", augment=True), load_cifar10)
