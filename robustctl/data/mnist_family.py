"""MNIST and Fashion-MNIST from IDX files, found offline or downloaded through torchvision.

Search order for the four IDX files (``.gz`` or plain), first folder that has all of them wins:
1. ``dataset.root`` and ``dataset.root/<Name>/raw`` (torchvision's layout) when a root is set;
2. for Fashion-MNIST, ``/usr/share/datasets/fashion-mnist``
   (Debian package ``dataset-fashion-mnist``);
3. ``<work_dir>/data/<Name>/raw`` (where ``dataset.download=true`` puts them).
If none has them and ``dataset.download`` is true, torchvision's ``<Name>`` class downloads into the
root; otherwise a :class:`~robustctl.errors.DataError` lists every folder looked in and the fixes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from robustctl.data.base import OPTIONS, DatasetConfig, RawSplit
from robustctl.data.idx import has_idx_files, load_idx_folder
from robustctl.errors import DataError

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@dataclass(frozen=True)
class MnistFamily:
    torchvision_name: str  # torchvision.datasets class, also its folder name
    class_names: tuple[str, ...]
    system_folders: tuple[Path, ...]  # offline install locations
    offline_hint: str


FASHION_MNIST = MnistFamily(
    "FashionMNIST",
    (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
    (DEBIAN_FASHION_MNIST,),
    "sudo apt-get install -y dataset-fashion-mnist",
)
MNIST = MnistFamily(
    "MNIST", tuple(str(d) for d in range(10)), (), "copy the four IDX files into dataset.root"
)


def default_root(cfg: DatasetConfig, work_dir: str | Path) -> Path:
    return Path(cfg.root).expanduser() if cfg.root else Path(work_dir, "data")


def candidate_folders(family: MnistFamily, cfg: DatasetConfig, work_dir: str | Path) -> list[Path]:
    folders: list[Path] = []
    if cfg.root:
        root = Path(cfg.root).expanduser()
        folders += [root, root / family.torchvision_name / "raw"]
    else:
        folders += list(family.system_folders)
    folders.append(default_root(cfg, work_dir) / family.torchvision_name / "raw")
    return list(dict.fromkeys(folders))


def _download(family: MnistFamily, root: Path) -> None:
    import torchvision

    try:
        getattr(torchvision.datasets, family.torchvision_name)(str(root), train=True, download=True)
        getattr(torchvision.datasets, family.torchvision_name)(
            str(root), train=False, download=True
        )
    except Exception as exc:  # network errors come in many types
        raise DataError(
            f"downloading {family.torchvision_name} into {root} failed: {exc}",
            hint=f"without internet: {family.offline_hint}",
        ) from exc


def load_mnist_family(family: MnistFamily, cfg: DatasetConfig, work_dir: str | Path) -> RawSplit:
    folders = candidate_folders(family, cfg, work_dir)
    found = next((f for f in folders if has_idx_files(f)), None)
    if found is None and cfg.download:
        _download(family, default_root(cfg, work_dir))
        found = next((f for f in folders if has_idx_files(f)), None)
    if found is None:
        looked = "\n    ".join(str(f) for f in folders)
        raise DataError(
            f"{family.torchvision_name} IDX files not found. Looked in:\n    {looked}",
            hint=f"{family.offline_hint}; or set dataset.root=/path/to/idx/files; "
            f"or add dataset.download=true (needs internet)",
        )
    arrays = load_idx_folder(found)

    def to_tensors(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = arrays[split]
        return (
            torch.from_numpy(images.copy()).unsqueeze(1).float().div_(255.0),
            torch.from_numpy(labels.astype("int64")),
        )

    x_train, y_train = to_tensors("train")
    x_test, y_test = to_tensors("test")
    if int(max(y_train.max(), y_test.max())) >= len(family.class_names):
        raise DataError(
            f"{found}: labels exceed the {len(family.class_names)} classes "
            f"of {family.torchvision_name}"
        )
    return RawSplit(
        x_train, y_train, x_test, y_test, family.class_names, source=str(found.resolve())
    )


def load_fashion_mnist(cfg: DatasetConfig, work_dir: str | Path) -> RawSplit:
    return load_mnist_family(FASHION_MNIST, cfg, work_dir)


def load_mnist(cfg: DatasetConfig, work_dir: str | Path) -> RawSplit:
    return load_mnist_family(MNIST, cfg, work_dir)


OPTIONS.add(DatasetConfig(name="fashion_mnist"), load_fashion_mnist)
OPTIONS.add(DatasetConfig(name="mnist"), load_mnist)
