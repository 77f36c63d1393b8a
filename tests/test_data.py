"""The dataset catalogue: digits, Fashion-MNIST, torchvision, image folders and paired folders."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from automl_prune.data.base import DataSplits
from automl_prune.data.common import seeded_split
from automl_prune.data.fashion_mnist import DEBIAN_DIR, FILES, find_files
from automl_prune.data.registry import load_dataset, parse_spec
from automl_prune.errors import DataError, UnknownNameError


def _rows(dataset: torch.utils.data.Dataset) -> set[bytes]:
    return {dataset[i][0].numpy().tobytes() for i in range(len(dataset))}


@pytest.fixture(scope="module")
def digits() -> DataSplits:
    return load_dataset("digits")


def test_seeded_split_is_disjoint_complete_stratified_and_seeded() -> None:
    labels = np.repeat(np.arange(4), 25)
    rest, val, test = seeded_split(100, (0.2, 10), seed=3, labels=labels)
    assert (len(rest), len(val), len(test)) == (70, 20, 10)
    assert sorted(np.concatenate([rest, val, test]).tolist()) == list(range(100))
    assert np.bincount(labels[val]).tolist() == [5, 5, 5, 5]
    again = seeded_split(100, (0.2, 10), seed=3, labels=labels)
    assert all(np.array_equal(a, b) for a, b in zip(again, [rest, val, test], strict=True))
    assert not (seeded_split(100, (0.2, 10), seed=4, labels=labels)[1] == val).all()
    with pytest.raises(DataError, match="cannot hold out"):
        seeded_split(10, (10,), seed=0)


def test_parse_spec() -> None:
    assert parse_spec("digits") == ("digits", None)
    assert parse_spec("folder:C:/data/x") == ("folder", "C:/data/x")


def test_digits_splits(digits: DataSplits) -> None:
    assert (len(digits.train), len(digits.val), len(digits.test)) == (1079, 359, 359)
    train, val, test = (_rows(s) for s in (digits.train, digits.val, digits.test))
    assert len(train | val | test) == 1797  # all 1797 images are distinct, so no image is in two splits
    info = digits.info
    assert (info.task, info.input_shape, info.num_classes) == ("classification", (1, 16, 16), 10)
    assert info.extra["sizes"] == {"train": 1079, "val": 359, "test": 359}
    images = digits.train.tensors[0]
    assert abs(images.mean().item()) < 1e-4 and abs(images.std().item() - 1) < 1e-3  # standardised on train
    assert torch.bincount(digits.val.tensors[1]).min() >= 35  # stratified: every class held out


def test_digits_are_seeded(digits: DataSplits) -> None:
    again, other = load_dataset("digits"), load_dataset("digits", seed=1)
    assert torch.equal(again.val.tensors[0], digits.val.tensors[0])
    assert not torch.equal(other.val.tensors[0], digits.val.tensors[0])


def test_digits_size_option() -> None:
    assert load_dataset("digits", size=8).train[0][0].shape == (1, 8, 8)


def test_unknown_dataset_lists_known_names() -> None:
    with pytest.raises(UnknownNameError) as err:
        load_dataset("digit")
    assert "did you mean 'digits'" in str(err.value) and "fashion-mnist" in str(err.value)


def test_unknown_option_and_argument() -> None:
    with pytest.raises(DataError, match="does not take") as err:
        load_dataset("digits", colour=True)
    assert "size=16" in err.value.fix
    with pytest.raises(DataError, match="takes no argument"):
        load_dataset("digits:x")


def _write_idx(path: Path, array: np.ndarray, compress: bool = True) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">i4").tobytes()
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


def _fake_mnist(folder: Path, n_train: int = 60, n_test: int = 20, compress: bool = True) -> None:
    """Tiny idx files with the Fashion-MNIST names (gzipped, or raw as torchvision keeps them)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        images, labels = FILES[split]
        _write_idx(folder / images, rng.integers(0, 256, (n, 28, 28)), compress)
        _write_idx(folder / labels, np.arange(n) % 10, compress)
    if not compress:
        for path in folder.glob("*.gz"):
            path.rename(path.with_suffix(""))


def test_fashion_mnist_parser_on_tiny_idx_files(tmp_path: Path) -> None:
    _fake_mnist(tmp_path)
    data = load_dataset(f"fashion-mnist:{tmp_path}", val_size=10, limit_train=30, size=14)
    assert (len(data.train), len(data.val), len(data.test)) == (30, 10, 20)
    assert data.info.input_shape == (1, 14, 14) and data.info.num_classes == 10
    assert set(data.test.tensors[1].tolist()) == set(range(10))


@pytest.mark.parametrize("limit", [50, 51])
def test_fashion_mnist_limit_of_the_whole_rest_keeps_all_of_it(tmp_path: Path, limit: int) -> None:
    _fake_mnist(tmp_path)  # 60 training images: 10 for val leave 50, the full-scale "55,000 of 55,000"
    data = load_dataset(f"fashion-mnist:{tmp_path}", val_size=10, limit_train=limit)
    assert (len(data.train), len(data.val)) == (50, 10)
    assert torch.bincount(data.train.tensors[1]).tolist() == [5] * 10


def test_fashion_mnist_missing_or_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", root=tmp_path)
    _fake_mnist(tmp_path)
    (tmp_path / FILES["test"][0]).write_bytes(b"not gzip")
    with pytest.raises(DataError, match="cannot read"):
        load_dataset("fashion-mnist", root=tmp_path, val_size=10)


@pytest.mark.skipif(
    not (DEBIAN_DIR / FILES["train"][0]).is_file(),
    reason=f"Fashion-MNIST files absent from {DEBIAN_DIR}: apt-get install dataset-fashion-mnist",
)
def test_fashion_mnist_from_debian() -> None:
    assert find_files(download=False) == DEBIAN_DIR
    data = load_dataset("fashion-mnist", limit_train=500, val_size=500)
    assert (len(data.train), len(data.val), len(data.test)) == (500, 500, 10000)
    assert data.info.input_shape == (1, 28, 28)
    assert torch.bincount(data.train.tensors[1]).tolist() == [50] * 10


def test_torchvision_dataset_from_a_local_root(tmp_path: Path) -> None:
    _fake_mnist(tmp_path / "FashionMNIST" / "raw", compress=False)
    data = load_dataset("torchvision:FashionMNIST", root=tmp_path, download=False, size=16)
    assert (len(data.train), len(data.val), len(data.test)) == (54, 6, 20)
    image, label = data.train[0]
    assert image.shape == (1, 16, 16) and isinstance(label, int)
    assert data.info.num_classes == 10 and data.info.name == "torchvision:FashionMNIST"


def test_torchvision_errors(tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError, match="CIFAR10"):
        load_dataset("torchvision:CIFAR11")
    with pytest.raises(DataError, match="internet"):
        load_dataset("torchvision:CIFAR10", root=tmp_path, download=False)


def _image(path: Path, value: int, size: tuple[int, int] = (12, 10)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, 255 - value, 0)).save(path)


def _class_folders(root: Path, per_class: int = 10) -> None:
    for label in ("cat", "dog"):
        for i in range(per_class):
            _image(root / label / f"{i}.png", 20 * i if label == "cat" else 250 - 20 * i)


def test_image_folder_split_seeded(tmp_path: Path) -> None:
    _class_folders(tmp_path)
    data = load_dataset(f"folder:{tmp_path}")
    assert (len(data.train), len(data.val), len(data.test)) == (14, 3, 3)
    assert data.info.input_shape == (3, 10, 12) and data.info.extra["classes"] == ["cat", "dog"]
    image, label = data.val[0]
    assert image.shape == (3, 10, 12) and label in (0, 1) and image.min() >= -1 and image.max() <= 1
    grey = load_dataset(f"folder:{tmp_path}", size=8, channels=1)
    assert grey.train[0][0].shape == (1, 8, 8)


def test_image_folder_uses_split_folders(tmp_path: Path) -> None:
    for split, n in (("train", 10), ("val", 2)):
        _class_folders(tmp_path / split, n)
    data = load_dataset(f"folder:{tmp_path}")
    assert (len(data.train), len(data.val), len(data.test)) == (17, 3, 4)  # val held out, val/ is test
    _class_folders(tmp_path / "test", 1)
    data = load_dataset(f"folder:{tmp_path}")
    assert (len(data.train), len(data.val), len(data.test)) == (20, 4, 2)


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(f"folder:{tmp_path / 'nope'}")
    with pytest.raises(DataError, match="no images"):
        load_dataset(f"folder:{tmp_path}")
    with pytest.raises(DataError, match="needs a folder"):
        load_dataset("folder")


def test_paired_folder(tmp_path: Path) -> None:
    for i in range(8):
        _image(tmp_path / "A" / f"{i}.png", 30 * i)
        _image(tmp_path / "B" / f"{i}.png", 255 - 30 * i)
    data = load_dataset(f"paired:{tmp_path}", size=8)
    assert (len(data.train), len(data.val), len(data.test)) == (6, 1, 1)
    assert data.info.task == "image-translation" and data.info.num_classes == 0
    a, b = data.train[0]
    assert a.shape == b.shape == (3, 8, 8) and not torch.equal(a, b)
    (tmp_path / "B" / "0.png").unlink()
    with pytest.raises(DataError, match="no partner"):
        load_dataset(f"paired:{tmp_path}")
