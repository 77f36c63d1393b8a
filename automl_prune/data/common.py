"""What every dataset factory shares: one seeded split and one set of image transforms.

Default conventions, which the options of :mod:`automl_prune.data.preprocessing` change (recorded in
``DataInfo.extra`` as ``mean``/``std`` and ``preprocessing``):

- in-memory tensor datasets (digits, Fashion-MNIST) are standardised per channel with the mean and std
  of their *train* split, so nothing about val/test leaks into training;
- datasets read from image files (folders, torchvision) are mapped to [-1, 1] (mean 0.5, std 0.5),
  since their statistics are unknown until every file has been read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import TensorDataset

from automl_prune.data.base import DataInfo, DataSplits
from automl_prune.data.preprocessing import (
    RANDOM_CROP_SCALE,
    ImageOptions,
    Preprocessing,
    cover_size,
)
from automl_prune.errors import DataError


def seeded_split(
    n: int, holdout: Sequence[float | int], *, seed: int, labels: Sequence[int] | None = None
) -> list[np.ndarray]:
    """Split indices ``0..n-1`` into ``[rest, part_1, ...]``, one part per ``holdout`` size.

    A float size is a fraction of ``n``, an int a count. Seeded, so a search, its resume and its
    baselines see the same splits; stratified by ``labels`` where the class counts allow it, so a
    small held-out split still holds every class.
    """
    from sklearn.model_selection import train_test_split  # heavy: loaded when data is split

    rest, parts = np.arange(n), []
    for size in holdout:
        count = max(1, round(size * n)) if isinstance(size, float) else int(size)
        if not 0 < count < len(rest):
            raise DataError(
                f"cannot hold out {count} of the {len(rest)} remaining items (of {n})",
                "use a larger dataset or smaller held-out sizes",
            )
        strata = None if labels is None else np.asarray(labels)[rest]
        try:
            rest, part = train_test_split(rest, test_size=count, random_state=seed, stratify=strata)
        except ValueError:  # too few items per class to stratify: a plain seeded split
            rest, part = train_test_split(rest, test_size=count, random_state=seed)
        parts.append(np.sort(part))
    return [np.sort(rest), *parts]


def resize_and_crop(
    images: torch.Tensor, size: tuple[int, int], crop_pct: float = 1.0, interpolation: str = "bilinear"
) -> torch.Tensor:
    """A float batch (N, C, H, W) in [0, 1] resized, aspect ratio kept, to :func:`cover_size` (antialiased
    when shrinking) and centre-cropped to ``size``: the evaluation framing of file-backed data, on tensors."""
    source = tuple(images.shape[-2:])
    cover = cover_size(source, size, crop_pct)  # type: ignore[arg-type]
    if cover != source:
        shrink = cover[0] < source[0]
        images = F.interpolate(images, size=cover, mode=interpolation, align_corners=False, antialias=shrink)
        images = images.clamp(0, 1)  # bicubic overshoots
    top, left = (round((c - s) / 2) for c, s in zip(cover, size, strict=True))
    return images[..., top : top + size[0], left : left + size[1]]


def random_crop_and_flip(size: tuple[int, int], interpolation: str) -> Callable[[Any], Any]:
    """The training augmentation (PIL images or C x H x W tensors): a random resized crop to ``size``
    and a horizontal flip."""
    from torchvision import transforms as T  # heavy: loaded when a dataset is built

    mode = T.InterpolationMode(interpolation)
    crop = T.RandomResizedCrop(size, scale=RANDOM_CROP_SCALE, interpolation=mode, antialias=True)
    return T.Compose([crop, T.RandomHorizontalFlip()])


class AugmentedTensors(TensorDataset):
    """Images and per-sample tensors (labels, ...) in memory whose images get ``transform`` anew at every
    read (training)."""

    def __init__(self, images: torch.Tensor, *others: torch.Tensor, transform: Callable) -> None:
        super().__init__(images, *others)
        self.transform = transform

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        image, *others = super().__getitem__(index)
        return self.transform(image), *others


def tensor_splits(
    name: str,
    parts: Sequence[tuple[torch.Tensor, ...]],
    *,
    num_classes: int,
    size: int | None,
    preprocess: ImageOptions,
    extra: dict | None = None,
    task: str = "classification",
) -> DataSplits:
    """Train/val/test ``(images in [0, 1], labels, ...)`` -> resized, cropped, normalised in-memory splits
    (``norm=train``: with the train split's per-channel statistics). The tensors after the images (labels;
    caption ids for ``text-to-image``) are per-sample integers, kept as long and in that order."""
    target = (size, size) if size else tuple(parts[0][0].shape[-2:])
    images = [
        resize_and_crop(part[0].float(), target, preprocess.crop_pct, preprocess.interpolation)
        for part in parts
    ]
    train_stats = (
        images[0].mean(dim=(0, 2, 3)).tolist(),
        images[0].std(dim=(0, 2, 3)).clamp_min(1e-6).tolist(),
    )
    prep = preprocess.resolve(images[0].shape[1], train_stats)
    mean, std = (torch.tensor(values).view(1, -1, 1, 1) for values in (prep.mean, prep.std))
    (train, *train_others), *held_out = [
        ((x - mean) / std, *(t.long() for t in part[1:])) for x, part in zip(images, parts, strict=True)
    ]
    augment = random_crop_and_flip(target, prep.interpolation) if prep.augment else None
    info = DataInfo(
        name=name,
        task=task,
        in_channels=images[0].shape[1],
        image_size=target,
        num_classes=num_classes,
        extra={**(extra or {}), **prep.extra(target)},
    )
    return DataSplits(
        AugmentedTensors(train, *train_others, transform=augment)
        if augment
        else TensorDataset(train, *train_others),
        *(TensorDataset(*split) for split in held_out),
        info,
    )


def image_size_of(path: str | Path, size: int | None) -> tuple[int, int]:
    """(H, W) the loaders yield: ``size`` x ``size``, or the size of the image at ``path``."""
    if size is not None:
        return (size, size)
    try:
        with Image.open(path) as image:
            return (image.height, image.width)
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(
            f"cannot read image {path}: {exc}", "remove or replace that file (it is corrupt or not an image)"
        ) from None


class ResizeToCover:
    """PIL image -> resized, aspect ratio kept, to :func:`cover_size` (for the centre crop to ``size``)."""

    def __init__(self, size: tuple[int, int], crop_pct: float, interpolation: str) -> None:
        self.size, self.crop_pct = size, crop_pct
        self.resample = Image.Resampling[interpolation.upper()]

    def __call__(self, image: Image.Image) -> Image.Image:
        height, width = cover_size((image.height, image.width), self.size, self.crop_pct)
        return (
            image
            if (height, width) == (image.height, image.width)
            else image.resize((width, height), self.resample)
        )


def file_transform(
    image_size: tuple[int, int], channels: int, prep: Preprocessing | None = None, *, train: bool = False
) -> Callable[[Image.Image], torch.Tensor]:
    """PIL image -> ``channels`` x H x W tensor normalised by ``prep`` (default: mean 0.5, std 0.5, i.e.
    [-1, 1]); every file-backed dataset uses this. Framed for evaluation (resized to cover, centre-cropped:
    the aspect ratio is kept) or, with ``train``, by the random crop and flip of training."""
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 or 3, not {channels}", "pass channels=1 (grey) or channels=3")
    prep = prep or ImageOptions().resolve(channels)
    from torchvision import transforms as T  # heavy: loaded when a dataset is built

    framing = (
        [random_crop_and_flip(image_size, prep.interpolation)]
        if train
        else [ResizeToCover(image_size, prep.crop_pct, prep.interpolation), T.CenterCrop(image_size)]
    )
    return T.Compose(
        [
            partial(Image.Image.convert, mode="L" if channels == 1 else "RGB"),
            *framing,
            T.ToTensor(),
            T.Normalize(prep.mean, prep.std),
        ]
    )


def file_extra(channels: int) -> dict[str, list[float]]:
    """The normalisation facts of :func:`file_transform`'s default, for ``DataInfo.extra``."""
    prep = ImageOptions().resolve(channels)
    return {"mean": list(prep.mean), "std": list(prep.std)}
