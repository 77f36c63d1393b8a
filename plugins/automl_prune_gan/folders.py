"""The user's own image-to-image data: CycleGAN-style folders (``unpaired:PATH``).

``trainA``/``trainB`` are unpaired for training; ``valA``/``valB`` and ``testA``/``testB`` are paired by
file name, since PSNR/SSIM need each input's target. The built-in offline photo datasets are in
:mod:`automl_prune_gan.data`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from automl_prune.api import (
    DataError,
    DataInfo,
    DataSplits,
    PairedImages,
    dataset_folder,
    file_extra,
    file_transform,
    first_image,
    image_files,
    image_size_of,
    read_image,
)
from automl_prune_gan.data import TASK, UnpairedPairs


class ImageFiles(Dataset):
    """The images of one folder (recursively, sorted by path), each through ``transform``."""

    def __init__(self, folder: Path, transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.paths, self.transform = image_files(folder), transform
        if not self.paths:
            raise DataError(f"no images in {folder}", "put the domain's image files there")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(read_image(self.paths[index]))


UNPAIRED_FOLDERS = ("trainA", "trainB", "valA", "valB", "testA", "testB")


def unpaired_folder(
    arg: str | None,
    *,
    size: int | None = None,
    channels: int = 3,
    out_channels: int | None = None,
    seed: int = 0,
) -> DataSplits:
    """``unpaired:PATH``: CycleGAN-style folders, unpaired for training and paired for evaluation.

    ``PATH/trainA`` and ``PATH/trainB`` hold the two domains (any names, any counts); train item ``i``
    pairs an A image with a B image drawn by a seeded permutation (:class:`UnpairedPairs`). ``valA`` +
    ``valB`` and ``testA`` + ``testB`` are paired by file name, since PSNR/SSIM need each input's
    target; all six folders are required. Images are resized to ``size`` x ``size`` (default: the first
    training A image's size) and mapped to [-1, 1].
    """
    root = dataset_folder(arg, "unpaired")
    missing = [name for name in UNPAIRED_FOLDERS if not (root / name).is_dir()]
    if missing:
        raise DataError(
            f"{root} has no {', '.join(name + '/' for name in missing)} folder" + "s" * (len(missing) > 1),
            "an unpaired dataset needs trainA/ and trainB/ (the two domains, unpaired) and valA/ + valB/, "
            "testA/ + testB/ (input/target pairs under matching file names); create "
            + ", ".join(f"{root / name}" for name in missing),
        )
    out_channels = out_channels or channels
    image_size = image_size_of(first_image(root / "trainA"), size)
    transform_a, transform_b = file_transform(image_size, channels), file_transform(image_size, out_channels)
    train = UnpairedPairs(
        ImageFiles(root / "trainA", transform_a), ImageFiles(root / "trainB", transform_b), seed=seed
    )
    val, test = (
        PairedImages(root / f"{split}A", root / f"{split}B", transform_a, transform_b)
        for split in ("val", "test")
    )
    info = DataInfo(
        name=f"unpaired:{root}",
        task=TASK,
        in_channels=channels,
        image_size=image_size,
        num_classes=0,
        extra={
            "seed": seed,
            "out_channels": out_channels,
            "paired": False,
            "paired_eval": True,
            **file_extra(channels),
        },
    )
    return DataSplits(train, val, test, info)
