"""Any torchvision classification dataset with a train/test split, e.g. ``--data torchvision:CIFAR10``.

torchvision downloads it into ``root`` (default: the cache's ``datasets`` folder) on a machine with
internet; offline, point ``root`` at a folder that already holds it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from automl_prune.data.base import DataInfo, DataSplits
from automl_prune.data.common import file_transform, seeded_split
from automl_prune.data.preprocessing import ImageOptions, takes_image_options
from automl_prune.errors import DataError, UnknownNameError
from automl_prune.io import cache_dir


class Transformed(Dataset):
    """Applies an image transform to ``(image, label)`` items of another dataset."""

    def __init__(self, dataset: Dataset, transform: Callable[[Any], torch.Tensor]) -> None:
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.dataset[index]
        return self.transform(image), int(label)


def _tvd() -> Any:
    """``torchvision.datasets``, imported when a torchvision dataset is asked for (it is heavy)."""
    import torchvision.datasets

    return torchvision.datasets


def _split_argument(cls: type) -> str | None:
    """How the class selects its split: ``train=`` (MNIST, CIFAR) or ``split=`` (SVHN, STL10)."""
    params = inspect.signature(cls).parameters
    return next((p for p in ("train", "split") if p in params), None)


def _labels(dataset: Dataset) -> np.ndarray:
    """Class labels of every item, read from the attribute torchvision keeps them in."""
    for attr in ("targets", "labels"):
        if getattr(dataset, attr, None) is not None:
            return np.asarray(getattr(dataset, attr))
    raise DataError(
        f"{type(dataset).__name__} has no class labels (no .targets or .labels)",
        "use a torchvision classification dataset, or export it to folders and use --data folder:PATH",
    )


def known_datasets() -> list[str]:
    return [
        name
        for name in _tvd().__all__
        if isinstance(getattr(_tvd(), name), type) and _split_argument(getattr(_tvd(), name)) is not None
    ]


@takes_image_options(norm="inception", augment=True)
def torchvision_dataset(
    arg: str | None,
    *,
    root: str | Path | None = None,
    size: int | None = None,
    channels: int | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    download: bool = True,
    preprocess: ImageOptions,
) -> DataSplits:
    """torchvision's train split minus a stratified, seeded ``val_fraction`` (val), and its test split.

    ``channels`` and ``size`` default to those of the first training image. Training images are
    augmented (random resized crop, flip) unless ``augment=false``; val and test are not.
    """
    if not arg:
        raise DataError("the torchvision dataset needs a class name", "use e.g. --data torchvision:CIFAR10")
    cls = getattr(_tvd(), arg, None)
    split_arg = _split_argument(cls) if isinstance(cls, type) else None
    if split_arg is None:
        raise UnknownNameError("torchvision dataset", arg, known_datasets())
    root = Path(root) if root else cache_dir() / "datasets"
    values = (True, False) if split_arg == "train" else ("train", "test")
    try:
        train, test = (cls(str(root), download=download, **{split_arg: value}) for value in values)
    except Exception as exc:  # missing files and network failures mean the same here
        raise DataError(
            f"cannot load torchvision {arg} from {root}: {type(exc).__name__}: {exc}",
            "connect to the internet so torchvision can download it, or pass root=FOLDER that holds it",
        ) from exc
    first, _ = train[0]
    channels = channels or (1 if len(first.getbands()) == 1 else 3)
    image_size = (size, size) if size else (first.height, first.width)
    prep = preprocess.resolve(channels)
    transform = file_transform(image_size, channels, prep)
    train_transform = file_transform(image_size, channels, prep, train=True) if prep.augment else transform
    labels = _labels(train)
    train_idx, val_idx = seeded_split(len(train), (val_fraction,), seed=seed, labels=labels)
    info = DataInfo(
        name=f"torchvision:{arg}",
        task="classification",
        in_channels=channels,
        image_size=image_size,
        num_classes=int(labels.max()) + 1,
        extra={"seed": seed, **prep.extra(image_size)},
    )
    return DataSplits(
        Transformed(Subset(train, train_idx.tolist()), train_transform),
        Transformed(Subset(train, val_idx.tolist()), transform),
        Transformed(test, transform),
        info,
    )
