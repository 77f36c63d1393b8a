"""What every dataset factory shares: one seeded split and one set of image transforms.

Conventions (recorded in ``DataInfo.extra`` as ``mean``/``std``):

- in-memory tensor datasets (digits, Fashion-MNIST) are standardised per channel with the mean and std
  of their *train* split, so nothing about val/test leaks into training;
- datasets read from image files (folders, torchvision) are mapped to [-1, 1] (mean 0.5, std 0.5),
  since their statistics are unknown until every file has been read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import TensorDataset

from automl_prune.data.base import DataInfo, DataSplits
from automl_prune.errors import DataError

FILE_MEAN, FILE_STD = 0.5, 0.5


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


def resize_images(images: torch.Tensor, size: int | None) -> torch.Tensor:
    """Bilinear resize of a float batch (N, C, H, W) to ``size`` x ``size`` (antialiased when shrinking)."""
    if size is None or tuple(images.shape[-2:]) == (size, size):
        return images
    shrink = size < max(images.shape[-2:])
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)


def tensor_splits(
    name: str,
    parts: Sequence[tuple[torch.Tensor, torch.Tensor]],
    *,
    num_classes: int,
    size: int | None,
    extra: dict | None = None,
) -> DataSplits:
    """Train/val/test ``(images in [0, 1], labels)`` -> resized, standardised in-memory splits."""
    images = [resize_images(x.float(), size) for x, _ in parts]
    mean = images[0].mean(dim=(0, 2, 3), keepdim=True)
    std = images[0].std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    train, val, test = (
        TensorDataset((x - mean) / std, y.long()) for x, (_, y) in zip(images, parts, strict=True)
    )
    info = DataInfo(
        name=name,
        task="classification",
        in_channels=images[0].shape[1],
        image_size=tuple(images[0].shape[-2:]),
        num_classes=num_classes,
        extra={**(extra or {}), "mean": mean.flatten().tolist(), "std": std.flatten().tolist()},
    )
    return DataSplits(train, val, test, info)


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


def file_transform(image_size: tuple[int, int], channels: int) -> Callable[[Image.Image], torch.Tensor]:
    """PIL image -> ``channels`` x H x W tensor in [-1, 1]; every file-backed dataset uses this."""
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 or 3, not {channels}", "pass channels=1 (grey) or channels=3")
    from torchvision import transforms as T  # heavy: loaded when a dataset is built

    return T.Compose(
        [
            partial(Image.Image.convert, mode="L" if channels == 1 else "RGB"),
            T.Resize(image_size),
            T.ToTensor(),
            T.Normalize([FILE_MEAN] * channels, [FILE_STD] * channels),
        ]
    )


def file_extra(channels: int) -> dict[str, list[float]]:
    """The normalisation facts of :func:`file_transform`, for ``DataInfo.extra``."""
    return {"mean": [FILE_MEAN] * channels, "std": [FILE_STD] * channels}
