"""Datasets read from the user's own image folders.

``folder:PATH`` is ImageFolder-style (one subfolder per class); ``paired:PATH`` is image-to-image data,
``PATH/A`` and ``PATH/B`` holding the input and target images under matching file names. Both take
their splits from ``train/``, ``val/`` and ``test/`` subfolders of PATH when there are any (see
:func:`layout_splits`), and otherwise split the whole folder, seeded.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from PIL import Image
from torch.utils.data import Dataset, Subset

from automl_prune.data.base import DataInfo, DataSplits
from automl_prune.data.common import file_extra, file_transform, image_size_of, seeded_split
from automl_prune.data.preprocessing import ImageOptions, takes_image_options
from automl_prune.errors import DataError

if TYPE_CHECKING:
    from torchvision.datasets import ImageFolder

HOLDOUT = 0.15  # fraction of the images held out for val (and for test, when there is no test folder)


def dataset_folder(arg: str | None, kind: str) -> Path:
    """The folder after the colon of ``--data KIND:PATH``, checked to exist (a DataError says how to fix
    it otherwise); ``~`` is expanded."""
    if not arg:
        raise DataError(f"the {kind} dataset needs a folder", f"use --data {kind}:PATH")
    root = Path(arg).expanduser()
    if not root.is_dir():
        raise DataError(f"dataset folder {root} does not exist", "check the path after the colon")
    return root


def image_files(folder: Path) -> list[Path]:
    """Every image file under ``folder`` (recursively, by torchvision's image extensions), sorted."""
    from torchvision.datasets.folder import IMG_EXTENSIONS  # heavy: loaded when a folder is read

    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMG_EXTENSIONS and p.is_file())


def first_image(root: Path) -> Path:
    """The first of :func:`image_files` of ``root`` (e.g. to read the image size); a DataError if none."""
    images = image_files(root)
    if not images:
        from torchvision.datasets.folder import IMG_EXTENSIONS

        raise DataError(f"no images in {root}", f"put image files ({', '.join(IMG_EXTENSIONS)}) there")
    return images[0]


def layout_splits(
    root: Path, build: Callable[[Path], Dataset], labels: Callable[[Dataset], list[int] | None], seed: int
) -> tuple[Dataset, Dataset, Dataset]:
    """Train/val/test from the folder layout, so a user's own split is respected.

    - ``train/``, ``val/`` and ``test/``: used as they are;
    - ``train/`` and one of ``val/`` or ``test/``: that folder is the test split (as ImageNet's val is)
      and val is held out of train, since model selection must not use the test split;
    - otherwise the whole folder is split seeded into train/val/test (stratified where labelled).
    """
    train_dir, val_dir, test_dir = (root / name for name in ("train", "val", "test"))
    if train_dir.is_dir() and (val_dir.is_dir() or test_dir.is_dir()):
        train = build(train_dir)
        if val_dir.is_dir() and test_dir.is_dir():
            return train, build(val_dir), build(test_dir)
        rest, val = _hold_out(train, (HOLDOUT,), labels, seed)
        return rest, val, build(test_dir if test_dir.is_dir() else val_dir)
    train, val, test = _hold_out(build(root), (HOLDOUT, HOLDOUT), labels, seed)
    return train, val, test


def _hold_out(
    dataset: Dataset, holdout: tuple[float, ...], labels: Callable[[Dataset], list[int] | None], seed: int
) -> list[Subset]:
    parts = seeded_split(len(dataset), holdout, seed=seed, labels=labels(dataset))  # type: ignore[arg-type]
    return [Subset(dataset, idx.tolist()) for idx in parts]


def read_image(path: str | Path) -> Image.Image:
    """The image at ``path``, decoded now (torchvision's loader decodes lazily); a DataError naming the
    file when it is truncated, corrupt or not an image."""
    try:
        with open(path, "rb") as f:
            image = Image.open(f)
            image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(
            f"cannot read image {path}: {exc}",
            "remove or replace that file (it is truncated, corrupt or not an image), then run again",
        ) from None
    return image


@takes_image_options(norm="inception", augment=True)
def image_folder(
    arg: str | None, *, size: int | None = None, channels: int = 3, seed: int = 0, preprocess: ImageOptions
) -> DataSplits:
    """Class-per-subfolder images framed to ``size`` x ``size`` (default: the first image's size).

    Training images are augmented (random resized crop, flip) unless ``augment=false``; val and test
    get the deterministic evaluation transform (see :mod:`automl_prune.data.preprocessing`).
    """
    root = dataset_folder(arg, "folder")
    image_size = image_size_of(first_image(root), size)
    prep = preprocess.resolve(channels)
    transform = file_transform(image_size, channels, prep)

    from torchvision.datasets import ImageFolder  # heavy: loaded when the dataset is built

    def build(folder: Path) -> ImageFolder:
        try:
            return ImageFolder(str(folder), transform=transform, loader=read_image)
        except (FileNotFoundError, OSError) as exc:
            raise DataError(
                f"{folder} is not a folder of class folders: {exc}",
                "put each class's images in its own subfolder: PATH/CLASS/IMAGE",
            ) from exc

    train, val, test = layout_splits(root, build, lambda ds: ds.targets, seed)
    if prep.augment:
        train = _with_transform(train, file_transform(image_size, channels, prep, train=True))
    classes = _dataset_of(train).classes
    if any(_dataset_of(split).classes != classes for split in (val, test)):
        raise DataError(
            f"the split folders of {root} hold different class folders",
            "give train/, val/ and test/ the same class subfolders",
        )
    info = DataInfo(
        name=f"folder:{root}",
        task="classification",
        in_channels=channels,
        image_size=image_size,
        num_classes=len(classes),
        extra={"seed": seed, "classes": classes, **prep.extra(image_size)},
    )
    return DataSplits(train, val, test, info)


def _dataset_of(split: Dataset) -> ImageFolder:
    return split.dataset if isinstance(split, Subset) else split  # type: ignore[return-value]


def _with_transform(split: Dataset, transform: Callable) -> Dataset:
    """The same items of the same ImageFolder (a Subset keeps its indices, so the seeded split is kept)
    read through ``transform``; a copy, since val may share the folder with its own transform."""
    if isinstance(split, Subset):
        return Subset(_with_transform(split.dataset, transform), split.indices)
    twin = copy.copy(split)
    twin.transform = transform  # type: ignore[attr-defined]
    return twin


class PairedImages(Dataset):
    """``(a, b)`` tensor pairs from the folders ``a_dir`` and ``b_dir``, matched by file name."""

    def __init__(self, a_dir: Path, b_dir: Path, transform_a: Callable, transform_b: Callable) -> None:
        a_names = {p.relative_to(a_dir) for p in image_files(a_dir)}
        b_names = {p.relative_to(b_dir) for p in image_files(b_dir)}
        unmatched = sorted(a_names ^ b_names)
        if unmatched:
            shown = ", ".join(str(p) for p in unmatched[:5])
            raise DataError(
                f"{len(unmatched)} images in {a_dir.parent} have no partner in {a_dir.name}/ or "
                f"{b_dir.name}/ (e.g. {shown})",
                f"give every input in {a_dir.name}/ a target in {b_dir.name}/ under the same file name",
            )
        if not a_names:
            raise DataError(
                f"no images in {a_dir}", f"put the paired images in {a_dir.name}/ and {b_dir.name}/"
            )
        self.pairs = [(a_dir / name, b_dir / name) for name in sorted(a_names)]
        self.transform_a, self.transform_b = transform_a, transform_b

    @classmethod
    def from_folder(cls, folder: Path, transform_a: Callable, transform_b: Callable) -> PairedImages:
        """Pairs from ``folder/A`` (inputs) and ``folder/B`` (targets)."""
        if not ((folder / "A").is_dir() and (folder / "B").is_dir()):
            raise DataError(
                f"{folder} has no A/ and B/ subfolders", "put inputs in PATH/A, targets in PATH/B"
            )
        return cls(folder / "A", folder / "B", transform_a, transform_b)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = self.pairs[index]
        return self.transform_a(read_image(a)), self.transform_b(read_image(b))


def paired_folder(
    arg: str | None,
    *,
    size: int | None = None,
    channels: int = 3,
    out_channels: int | None = None,
    seed: int = 0,
) -> DataSplits:
    """Paired images for image translation; ``info.extra["out_channels"]`` is the channels of B.

    Always mean 0.5 / std 0.5, i.e. [-1, 1], with no normalisation options: the generators' outputs are
    tanh in [-1, 1] and are compared with the targets as they are.
    """
    root = dataset_folder(arg, "paired")
    out_channels = out_channels or channels
    image_size = image_size_of(first_image(root), size)
    transform_a, transform_b = file_transform(image_size, channels), file_transform(image_size, out_channels)
    train, val, test = layout_splits(
        root, lambda folder: PairedImages.from_folder(folder, transform_a, transform_b), lambda _: None, seed
    )
    info = DataInfo(
        name=f"paired:{root}",
        task="image-translation",
        in_channels=channels,
        image_size=image_size,
        extra={"seed": seed, "out_channels": out_channels, **file_extra(channels)},
    )
    return DataSplits(train, val, test, info)
