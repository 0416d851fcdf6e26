"""Loaders on small files written here in the real formats (IDX gz, CIFAR-10 python pickles)."""

from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest
import torch

from robustctl.data import DatasetConfig, SyntheticDatasetConfig, load_dataset
from robustctl.data.base import crop_flip, iterate_batches, split_train_val
from robustctl.data.idx import read_idx, write_idx
from robustctl.errors import DataError


def write_mnist_folder(folder, n_train=30, n_test=12, size=28, compress=True, seed=0):
    rng = np.random.default_rng(seed)
    suffix = ".gz" if compress else ""
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, size, size), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, size, size), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for stem, array in arrays.items():
        write_idx(array, folder / f"{stem}{suffix}")
    return arrays


def test_idx_round_trip_matches_the_byte_layout(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = write_idx(array, tmp_path / "x-idx3-ubyte.gz")
    with gzip.open(path, "rb") as fh:
        raw = fh.read()
    # magic 0x00000803, then dims 2, 3, 4 big-endian, then the data row-major
    assert raw[:4] == b"\x00\x00\x08\x03"
    assert raw[4:16] == b"\x00\x00\x00\x02\x00\x00\x00\x03\x00\x00\x00\x04"
    assert raw[16:] == bytes(range(24))
    np.testing.assert_array_equal(read_idx(path), array)


def test_corrupt_idx_files_are_refused(tmp_path):
    bad_magic = tmp_path / "bad"
    bad_magic.write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x01\x05")
    with pytest.raises(DataError, match="magic"):
        read_idx(bad_magic)
    path = write_idx(np.zeros((4, 5, 5), np.uint8), tmp_path / "t")
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(DataError, match="truncated"):
        read_idx(path)


@pytest.mark.parametrize("compress", [True, False])
def test_fashion_mnist_reads_idx_from_root(tmp_path, compress):
    arrays = write_mnist_folder(tmp_path, compress=compress)
    data = load_dataset(
        DatasetConfig(name="fashion_mnist", root=str(tmp_path), val_fraction=0.2), tmp_path
    )
    assert data.image_shape == (1, 28, 28) and data.num_classes == 10
    assert data.sizes() == {"train": 24, "val": 6, "test": 12}
    assert data.x_test.dtype == torch.float32 and 0 <= data.x_test.min() and data.x_test.max() <= 1
    np.testing.assert_allclose(
        data.x_test[:, 0].numpy() * 255, arrays["t10k-images-idx3-ubyte"], atol=1e-3
    )
    np.testing.assert_array_equal(data.y_test.numpy(), arrays["t10k-labels-idx1-ubyte"])


def test_mnist_reads_torchvision_layout(tmp_path):
    write_mnist_folder(tmp_path / "MNIST" / "raw", compress=False)
    data = load_dataset(DatasetConfig(name="mnist", root=str(tmp_path)), tmp_path)
    assert data.sizes()["test"] == 12 and data.class_names[3] == "3"


def test_missing_dataset_says_where_it_looked_and_how_to_fix(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset(DatasetConfig(name="mnist", root=str(tmp_path / "nowhere")), tmp_path)
    text = str(err.value)
    assert (
        str(tmp_path / "nowhere") in text
        and "dataset.download=true" in text
        and "dataset.root" in text
    )


def write_cifar_folder(folder, per_batch=4, n_test=6, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        n = n_test if name == "test_batch" else per_batch
        batch = {
            b"batch_label": name.encode(),
            b"labels": rng.integers(0, 10, n).tolist(),
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [b"x.png"] * n,
        }
        with open(folder / name, "wb") as fh:
            pickle.dump(batch, fh, protocol=2)
        batches[name] = batch
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": [b"airplane"] * 10}, fh)
    return batches


def test_cifar10_reads_python_pickles(tmp_path):
    batches = write_cifar_folder(tmp_path / "cifar-10-batches-py")
    data = load_dataset(
        DatasetConfig(name="cifar10", root=str(tmp_path), val_fraction=0.0), tmp_path
    )
    assert data.image_shape == (3, 32, 32) and data.sizes() == {"train": 20, "val": 0, "test": 6}
    # row-major planes: the first 1024 values are the red channel
    first = batches["test_batch"][b"data"][0]
    np.testing.assert_allclose(data.x_test[0, 0].flatten().numpy() * 255, first[:1024], atol=1e-3)
    np.testing.assert_allclose(data.x_test[0, 2].flatten().numpy() * 255, first[2048:], atol=1e-3)
    assert data.y_test.tolist() == batches["test_batch"][b"labels"]


def test_cifar10_refuses_pickles_that_would_run_code(tmp_path):
    write_cifar_folder(tmp_path / "cifar-10-batches-py")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as fh:
        pickle.dump({b"data": Evil(), b"labels": []}, fh)
    with pytest.raises(DataError, match="forbidden"):
        load_dataset(DatasetConfig(name="cifar10", root=str(tmp_path)), tmp_path)


def test_digits_default_is_bundled_and_in_unit_range(tmp_path):
    data = load_dataset(DatasetConfig(name="digits"), tmp_path)
    sizes = data.sizes()
    assert sizes["train"] + sizes["val"] + sizes["test"] == 1797 and sizes["test"] == 360
    assert data.image_shape == (1, 8, 8) and float(data.x_train.max()) == 1.0


def test_split_is_deterministic_and_disjoint():
    x = torch.arange(100, dtype=torch.float32).view(100, 1, 1, 1)
    y = torch.zeros(100, dtype=torch.int64)
    a = split_train_val(x, y, 0.2, seed=3)
    b = split_train_val(x, y, 0.2, seed=3)
    c = split_train_val(x, y, 0.2, seed=4)
    assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2]) and not torch.equal(a[2], c[2])
    train_ids, val_ids = set(a[0].flatten().tolist()), set(a[2].flatten().tolist())
    assert len(val_ids) == 20 and not train_ids & val_ids and len(train_ids | val_ids) == 100


def test_synthetic_is_seeded_and_limits_apply(tmp_path):
    cfg = SyntheticDatasetConfig(name="synthetic", num_samples=200, train_limit=50, test_limit=10)
    a, b = load_dataset(cfg, tmp_path), load_dataset(cfg, tmp_path)
    assert a.content_hash() == b.content_hash()
    assert a.sizes() == {"train": 45, "val": 5, "test": 10}
    other = load_dataset(
        SyntheticDatasetConfig(name="synthetic", num_samples=200, split_seed=1), tmp_path
    )
    assert other.content_hash() != a.content_hash()


def test_iterate_batches_covers_every_index_once():
    x, y = torch.rand(10, 1, 4, 4), torch.arange(10)
    seen = torch.cat(
        [idx for _, _, idx in iterate_batches(x, y, 3, generator=torch.Generator().manual_seed(0))]
    )
    assert sorted(seen.tolist()) == list(range(10))
    for xb, yb, idx in iterate_batches(x, y, 4):
        assert torch.equal(xb, x[idx]) and torch.equal(yb, y[idx])


def test_crop_flip_is_a_shifted_or_mirrored_window():
    x = torch.rand(16, 3, 8, 8)
    out = crop_flip(x, torch.Generator().manual_seed(0), pad=2)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(16):
        windows = [padded[i, :, dy : dy + 8, dx : dx + 8] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[i], w) or torch.equal(out[i], w.flip(-1)) for w in windows)
