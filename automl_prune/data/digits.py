"""scikit-learn's digits: 1797 real 8x8 handwritten digits that ship with pip, so always offline."""

from __future__ import annotations

import torch

from automl_prune.data.base import DataSplits
from automl_prune.data.common import seeded_split, tensor_splits
from automl_prune.data.preprocessing import ImageOptions, takes_image_options
from automl_prune.errors import DataError


def digit_images() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 digits as (N, 1, 8, 8) floats in [0, 1] and their long labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(bunch.images).float().div(16.0).unsqueeze(1)  # pixel values are 0..16
    return images, torch.from_numpy(bunch.target).long()


@takes_image_options(norm="train", augment=False)
def digits(arg: str | None = None, *, size: int = 16, seed: int = 0, preprocess: ImageOptions) -> DataSplits:
    """Digits upsampled (bilinear) to ``size`` x ``size``, 1 channel; stratified 60/20/20 split by ``seed``.

    16x16 by default: the 8x8 originals are too small for a network that downsamples three times.
    Standardised with the train split's statistics unless ``norm`` or ``mean``/``std`` say otherwise;
    not augmented by default (a mirrored digit is another glyph, and a crop of 16 pixels loses much).
    """
    if arg:
        raise DataError(f"the digits dataset takes no argument, got {arg!r}", "use --data digits")
    images, labels = digit_images()
    parts = seeded_split(len(labels), (0.2, 0.2), seed=seed, labels=labels.numpy())
    return tensor_splits(
        "digits",
        [(images[idx], labels[idx]) for idx in parts],
        num_classes=10,
        size=size,
        preprocess=preprocess,
        extra={"seed": seed},
    )
