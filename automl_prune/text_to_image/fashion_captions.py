"""Captioned Fashion-MNIST for ``text-to-image``: a seeded subset of the 60k training garments, each
captioned with its class and two measured attributes ("a small dark ankle boot"), split by caption like
:func:`~.captions.digits_captions`.

The attributes are cut at tertiles within each class: the classes differ more than the attributes do
(a sandal covers a median 24% of the frame, a shirt 60%), so global cut points would call nearly every
sandal small and every coat large, and the words would add nothing to the class name.
"""

from __future__ import annotations

from pathlib import Path

import torch

from automl_prune.data.base import DataSplits
from automl_prune.data.common import resize_and_crop, seeded_split
from automl_prune.data.fashion_mnist import find_files, load_split
from automl_prune.data.preprocessing import ImageOptions, takes_image_options
from automl_prune.errors import DataError
from automl_prune.text_to_image.captions import (
    captioned_splits,
    check_options,
    tertiles_by_label,
    words_by_label,
)

# No hyphens: the random encoder's tokenizer would split "t-shirt" into unknown pieces.
CLASS_WORDS = (
    "top",
    "trousers",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)
ATTRIBUTE_WORDS: dict[str, tuple[str, str, str]] = {
    "size": ("small", "medium", "large"),
    "brightness": ("dark", "grey", "light"),
}
GARMENT = 0.1  # a pixel brighter than this is garment; the background is 0 in over half the pixels


def garment_attributes(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Grey images (N, 1, H, W) in [0, 1] -> per-image ``size`` (the share of the frame the garment
    pixels cover, so independent of H, W) and ``brightness`` (their mean intensity)."""
    grey = images[:, 0].clamp(0, 1)
    garment = (grey > GARMENT).to(grey.dtype)
    area = garment.sum(dim=(1, 2))
    return {
        "size": garment.mean(dim=(1, 2)),
        "brightness": (grey * garment).sum(dim=(1, 2)) / area.clamp_min(1.0),
    }


def describe(
    images: torch.Tensor, thresholds: dict[str, list[list[float]]], labels: torch.Tensor
) -> list[tuple[str, ...]]:
    """Images (N, 1, H, W) in [0, 1] of classes ``labels`` -> (size word, brightness word) per image, cut
    at their class's points (``info.extra["attributes"]``), e.g. to check a generated garment."""
    return words_by_label(garment_attributes(images), thresholds, labels, ATTRIBUTE_WORDS)


def caption(size: str, brightness: str, label: int) -> str:
    """Both words always, "medium" and "grey" too, so each caption states each attribute."""
    return f"a {size} {brightness} {CLASS_WORDS[label]}"


@takes_image_options(norm="train", augment=False)
def fashion_captions(
    arg: str | None = None,
    *,
    root: str | Path | None = None,
    download: bool = True,
    limit: int = 3000,
    size: int = 16,
    seed: int = 0,
    unseen: float = 0.2,
    text_encoder: str = "random",
    preprocess: ImageOptions,
) -> DataSplits:
    """``limit`` garments (stratified by class, drawn by ``seed``) of the 60k Fashion-MNIST training set,
    resized to ``size`` x ``size``, as ``(image, caption_id, label)`` split by caption.

    The files are found as the ``fashion-mnist`` dataset finds them (``fashion-captions:PATH``, ``root``,
    the environment variable, the Debian package, the download cache, then a download unless
    ``download=False``), with the same error when they are absent. 3000 garments by default: a base
    UNet trains on them in minutes on 2 CPU cores. ``info.extra["attributes"]`` holds the cut points per
    attribute and class, for :func:`describe`.
    """
    check_options("fashion-captions", unseen, preprocess)
    images, labels = load_split(find_files(arg or root, download=download), "train")
    if isinstance(limit, bool) or not isinstance(limit, int) or not len(CLASS_WORDS) <= limit < len(labels):
        raise DataError(
            f"limit={limit!r} is not a number of garments between 10 and {len(labels) - 1}",
            "e.g. --data-arg limit=3000",
        )
    chosen = seeded_split(len(labels), (limit,), seed=seed, labels=labels.numpy())[1]
    images, labels = images[chosen], labels[chosen]
    framed = resize_and_crop(images, (size, size), preprocess.crop_pct, preprocess.interpolation)
    thresholds = tertiles_by_label(garment_attributes(framed), labels, len(CLASS_WORDS))
    words = describe(framed, thresholds, labels)
    texts = [caption(*pair, label) for pair, label in zip(words, labels.tolist(), strict=True)]
    return captioned_splits(
        "fashion-captions",
        images,
        labels,
        texts,
        num_classes=len(CLASS_WORDS),
        size=size,
        seed=seed,
        unseen=unseen,
        text_encoder=text_encoder,
        preprocess=preprocess,
        extra={"attributes": thresholds, "limit": limit},
    )
