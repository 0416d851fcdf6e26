"""The IDX format of (Fashion-)MNIST files (LeCun et al.), read and written without torchvision.

Layout: 2 zero bytes, a type byte (0x08 = uint8), a rank byte, then ``rank`` big-endian uint32
dimensions, then the data. Files may be gzip-compressed (``.gz``). A bad magic number, an
unsupported type or a truncated body is a :class:`~robustctl.errors.DataError`.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from robustctl.errors import DataError

_UINT8 = 0x08
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_idx(path: str | Path) -> np.ndarray:
    path = Path(path)
    try:
        with _open(path) as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read IDX file {path}: {exc}") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path} is not an IDX file (bad magic number)")
    dtype, rank = raw[2], raw[3]
    if dtype != _UINT8:
        raise DataError(f"{path}: unsupported IDX element type 0x{dtype:02x} (only uint8)")
    header = 4 + 4 * rank
    if len(raw) < header:
        raise DataError(f"{path} is truncated (incomplete header)")
    shape = struct.unpack(f">{rank}I", raw[4:header])
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise DataError(
            f"{path} is truncated or padded: header says {expected} bytes of data, "
            f"found {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def write_idx(array: np.ndarray, path: str | Path) -> Path:
    """Write a uint8 array as IDX (gzip when ``path`` ends in .gz): used by tests and tools."""
    path = Path(path)
    array = np.ascontiguousarray(array, dtype=np.uint8)
    payload = (
        bytes([0, 0, _UINT8, array.ndim])
        + struct.pack(f">{array.ndim}I", *array.shape)
        + array.tobytes()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as fh:
        fh.write(payload)
    return path


def find_idx_file(folder: Path, stem: str) -> Path | None:
    for name in (f"{stem}.gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def has_idx_files(folder: Path) -> bool:
    return all(find_idx_file(folder, stem) for pair in SPLIT_FILES.values() for stem in pair)


def load_idx_folder(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"train": (images [N, H, W] uint8, labels [N]), "test": (...)}`` from one folder; a
    :class:`~robustctl.errors.DataError` when a split's images and labels disagree or a split
    holds no image."""
    out = {}
    for split, (img_stem, lbl_stem) in SPLIT_FILES.items():
        image_file = find_idx_file(folder, img_stem)
        images, labels = read_idx(image_file), read_idx(find_idx_file(folder, lbl_stem))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(
                f"{folder}: {split} images {images.shape} do not match labels {labels.shape}"
            )
        if len(images) == 0:
            raise DataError(
                f"{image_file} holds no images (its header says 0): the {split} split is empty",
                hint="replace the file with a complete copy of the dataset, or point "
                "dataset.root at another folder",
            )
        out[split] = (images, labels)
    return out
