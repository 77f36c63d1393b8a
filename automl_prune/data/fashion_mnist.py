"""Fashion-MNIST (60k train + 10k test, 28x28 grey, MIT licence) from its original idx .gz files.

Where the files are looked for, in order: the ``root`` option (or ``fashion-mnist:PATH``), the
``AUTOML_PRUNE_FASHION_MNIST`` environment variable, Debian's ``dataset-fashion-mnist`` package
(``/usr/share/datasets/fashion-mnist``), then torchvision's download folder in the cache. Only if
none holds them does torchvision download them (into the cache), which needs the internet.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch

from automl_prune.data.base import DataSplits
from automl_prune.data.common import seeded_split, tensor_splits
from automl_prune.data.preprocessing import ImageOptions, takes_image_options
from automl_prune.errors import DataError
from automl_prune.io import cache_dir

ENV_VAR = "AUTOML_PRUNE_FASHION_MNIST"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
INSTALL_FIX = (
    "apt-get install dataset-fashion-mnist (Debian/Ubuntu), or pass root=FOLDER with the four idx .gz files"
)


def read_idx(path: Path) -> np.ndarray:
    """Parse one gzipped idx file (unsigned bytes): a big-endian header of dims, then the data."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
        zero, dtype, ndim = int.from_bytes(raw[:2], "big"), raw[2], raw[3]
        if zero != 0 or dtype != 0x08:
            raise ValueError("not an unsigned-byte idx file")
        dims = np.frombuffer(raw, dtype=">i4", count=ndim, offset=4)
        return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(
            f"cannot read Fashion-MNIST file {path}: {exc}", f"the file is corrupt; {INSTALL_FIX}"
        ) from exc


def _has_files(folder: Path) -> bool:
    return all((folder / name).is_file() for pair in FILES.values() for name in pair)


def _download(root: Path) -> Path:
    """Download through torchvision into ``root``; the raw .gz files stay in ``root/FashionMNIST/raw``."""
    from torchvision.datasets import FashionMNIST

    try:
        FashionMNIST(str(root), train=True, download=True)
        FashionMNIST(str(root), train=False, download=True)
    except Exception as exc:  # any network or file failure means the same to the user
        raise DataError(
            f"Fashion-MNIST is not installed and downloading it failed: {type(exc).__name__}: {exc}",
            INSTALL_FIX,
        ) from exc
    return root / "FashionMNIST" / "raw"


def find_files(root: str | Path | None = None, *, download: bool = True) -> Path:
    """The folder holding the four idx .gz files (see the module docstring for the search order)."""
    explicit = root or os.environ.get(ENV_VAR)
    if explicit:
        if not _has_files(Path(explicit)):
            raise DataError(f"no Fashion-MNIST idx .gz files in {explicit}", INSTALL_FIX)
        return Path(explicit)
    downloads = cache_dir() / "datasets"
    for folder in (DEBIAN_DIR, downloads / "FashionMNIST" / "raw"):
        if _has_files(folder):
            return folder
    if not download:
        raise DataError("Fashion-MNIST files not found and download=False", INSTALL_FIX)
    return _download(downloads)


def load_split(folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One split's (images (N, 1, 28, 28) in [0, 1], labels) from the folder :func:`find_files` gave."""
    images_file, labels_file = FILES[split]
    images = torch.from_numpy(read_idx(folder / images_file).copy())
    labels = torch.from_numpy(read_idx(folder / labels_file).astype(np.int64))
    return images.unsqueeze(1).float().div(255.0), labels


@takes_image_options(norm="train", augment=False)
def fashion_mnist(
    arg: str | None = None,
    *,
    root: str | Path | None = None,
    size: int | None = None,
    limit_train: int | None = None,
    val_size: int = 5000,
    seed: int = 0,
    download: bool = True,
    preprocess: ImageOptions,
) -> DataSplits:
    """Fashion-MNIST; val = ``val_size`` images held out of the 60k train set (stratified, seeded),
    test = the official 10k. ``limit_train`` keeps a stratified subset of the rest for quick runs (the
    whole rest when the limit is at least its size, so 55,000 means all of it); ``size`` resizes from
    28x28. Standardised with the train split's statistics unless ``norm`` or ``mean``/``std`` say
    otherwise; not augmented by default (as digits: small images).
    """
    folder = find_files(arg or root, download=download)
    train_images, train_labels = load_split(folder, "train")
    limited = limit_train is not None and limit_train < len(train_labels) - val_size  # else: all the rest
    holdout = (val_size, limit_train) if limited else (val_size,)
    parts = seeded_split(len(train_labels), holdout, seed=seed, labels=train_labels.numpy())
    train_idx, val_idx = (parts[2], parts[1]) if limited else (parts[0], parts[1])
    return tensor_splits(
        "fashion-mnist",
        [
            (train_images[train_idx], train_labels[train_idx]),
            (train_images[val_idx], train_labels[val_idx]),
            load_split(folder, "test"),
        ],
        num_classes=10,
        size=size,
        preprocess=preprocess,
        extra={"seed": seed},
    )
