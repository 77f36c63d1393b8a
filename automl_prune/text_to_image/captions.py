"""Captioned digits for ``text-to-image``: each of scikit-learn's 1797 digits gets a caption made of two
measured stroke attributes and its label ("a bold right-leaning handwritten seven"), and the splits are
made by caption, so val and test prompts never appear in training.

The measurement (:func:`stroke_attributes`) and the words (:func:`describe`) work on any image size,
so the same cut points that labelled the data judge whether a generated image shows its caption. The
other captioned datasets (:mod:`.fashion_captions`, :mod:`.photo_captions`) share the tertile words
(:func:`measured_words`), the option checks and the split by caption (:func:`captioned_splits`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from automl_prune.data.base import DataSplits
from automl_prune.data.common import resize_and_crop, seeded_split, tensor_splits
from automl_prune.data.digits import digit_images
from automl_prune.data.preprocessing import ImageOptions, takes_image_options
from automl_prune.errors import DataError
from automl_prune.tasks.base import SPLITS
from automl_prune.text_to_image.text_encoder import encoder_spec

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# Low, middle, high third of each attribute; the order of the attributes is the order in a caption.
ATTRIBUTE_WORDS: dict[str, tuple[str, str, str]] = {
    "thickness": ("thin", "regular", "bold"),
    "slant": ("left-leaning", "upright", "right-leaning"),
}
MAX_UNSEEN = 0.9  # above this, too few captions are left to train on


def stroke_attributes(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Grey images (N, 1, H, W) in [0, 1] -> per-image ``thickness`` and ``slant``, independent of H, W.

    ``thickness`` is the ink mass (mean intensity). The digits are size-normalised into their box, so
    the mean ink of the ten classes differs by under 10% and ink mass follows stroke width, not the
    digit's shape; a stroke-width ratio (2 x ink / total variation) was tried and rejected: it moves
    with resolution and blur (8x8 and 16x16 tertiles disagreed on 2/3 of the digits) and reads a noisy
    generated sample as thin. ``slant`` is the horizontal shift per unit of height of the ink's
    intensity-weighted second moments, cov(x, y) / var(y) with y pointing up: > 0 leans right.
    """
    ink = images[:, 0].clamp(0, 1)
    height, width = ink.shape[-2:]
    weights = ink / ink.sum(dim=(1, 2), keepdim=True).clamp_min(1e-8)
    x = torch.arange(width, dtype=ink.dtype, device=ink.device).view(1, 1, -1)
    y = -torch.arange(height, dtype=ink.dtype, device=ink.device).view(1, -1, 1)  # rows count down
    dx = x - (weights * x).sum(dim=(1, 2), keepdim=True)
    dy = y - (weights * y).sum(dim=(1, 2), keepdim=True)
    variance_y = (weights * dy * dy).sum(dim=(1, 2)).clamp_min(1e-8)
    return {"thickness": ink.mean(dim=(1, 2)), "slant": (weights * dx * dy).sum(dim=(1, 2)) / variance_y}


def tertiles(values: torch.Tensor) -> list[float]:
    """The two cut points that put a third of ``values`` in each of three bins."""
    cuts = torch.quantile(values.double(), torch.tensor([1 / 3, 2 / 3], dtype=torch.float64))
    return cuts.tolist()


def attribute_words(
    words: Sequence[str], values: torch.Tensor, cuts: Sequence[float] | torch.Tensor
) -> list[str]:
    """Measured values -> their ``words`` (low, middle, high): low up to ``cuts[0]``, middle up to
    ``cuts[1]``, high above. ``cuts`` is one pair for all values, or one pair per value (N, 2)."""
    bins = (values.double().unsqueeze(-1) > torch.as_tensor(cuts, dtype=torch.float64)).sum(-1)
    return [words[i] for i in bins.tolist()]


def measured_words(
    measured: dict[str, torch.Tensor],
    thresholds: dict[str, Any],
    vocabulary: dict[str, tuple[str, str, str]],
) -> list[tuple[str, ...]]:
    """Per-image words, one per attribute of ``vocabulary`` in its order, cut at ``thresholds``."""
    columns = [attribute_words(words, measured[name], thresholds[name]) for name, words in vocabulary.items()]
    return list(zip(*columns, strict=True))


def tertiles_by_label(
    measured: dict[str, torch.Tensor], labels: torch.Tensor, num_classes: int
) -> dict[str, list[list[float]]]:
    """Each attribute's tertile cut points within each label: ``[attribute][label] = [low, high]``, so
    "small" means small for an ankle boot, not small among all garments."""
    return {
        name: [tertiles(values[labels == label]) for label in range(num_classes)]
        for name, values in measured.items()
    }


def words_by_label(
    measured: dict[str, torch.Tensor],
    thresholds: dict[str, list[list[float]]],
    labels: torch.Tensor,
    vocabulary: dict[str, tuple[str, str, str]],
) -> list[tuple[str, ...]]:
    """:func:`measured_words` with each image cut at its label's points (:func:`tertiles_by_label`)."""
    per_image = {name: torch.tensor(cuts, dtype=torch.float64)[labels] for name, cuts in thresholds.items()}
    return measured_words(measured, per_image, vocabulary)


def describe(images: torch.Tensor, thresholds: dict[str, Sequence[float]]) -> list[tuple[str, ...]]:
    """Images (N, 1, H, W) in [0, 1] -> (thickness word, slant word) per image, by ``thresholds``
    (``info.extra["attributes"]``), e.g. to check a generated image against its caption."""
    return measured_words(stroke_attributes(images), thresholds, ATTRIBUTE_WORDS)


def caption(thickness: str, slant: str, digit: int) -> str:
    """Every caption names all three facts, "regular" and "upright" included, so each prompt states
    each attribute and a caption's words can be compared one by one with :func:`describe`."""
    return f"a {thickness} {slant} handwritten {DIGIT_WORDS[digit]}"


def split_prompts(label_of: np.ndarray, unseen: float, seed: int) -> list[np.ndarray]:
    """Caption ids -> [train, val, test] ids: ``unseen`` of them held out (at least one each for val and
    test, half each), drawn by ``seed`` and stratified by the captions' label. A label left without a
    training caption gets its lowest held-out caption back, so every label can be learnt."""
    held = max(2, round(unseen * len(label_of)))
    train, val, test = seeded_split(len(label_of), (held // 2, held - held // 2), seed=seed, labels=label_of)
    held_out = np.concatenate([val, test])
    missing = sorted(set(label_of[held_out].tolist()) - set(label_of[train].tolist()))
    back = [held_out[label_of[held_out] == label].min() for label in missing]
    return [np.union1d(train, back), np.setdiff1d(val, back), np.setdiff1d(test, back)]


def reject_argument(name: str, arg: str | None) -> None:
    """Datasets built from packaged data take no ``name:ARG``."""
    if arg:
        raise DataError(f"the {name} dataset takes no argument, got {arg!r}", f"use --data {name}")


def check_options(name: str, unseen: object, preprocess: ImageOptions) -> None:
    """The options every captioned dataset shares: ``unseen`` in range, no augmentation."""
    if isinstance(unseen, bool) or not isinstance(unseen, int | float) or not 0 < unseen <= MAX_UNSEEN:
        raise DataError(
            f"unseen={unseen!r} is outside (0, {MAX_UNSEEN}]",
            "unseen is the fraction of the captions held out for val and test, e.g. --data-arg unseen=0.2",
        )
    if preprocess.augment:
        raise DataError(
            "augment=true would flip and crop the images, so they would no longer show their captions",
            f"leave augment off for {name}",
        )


def captioned_splits(
    name: str,
    images: torch.Tensor,
    labels: torch.Tensor,
    texts: list[str],
    *,
    num_classes: int,
    size: int,
    seed: int,
    unseen: float,
    text_encoder: str,
    preprocess: ImageOptions,
    extra: dict[str, Any],
) -> DataSplits:
    """Images in [0, 1] with their labels and caption texts -> ``(image, caption_id, label)`` splits made
    by caption (:func:`split_prompts`). ``info.extra`` gets ``captions`` (every caption, sorted: what
    ``caption_id`` indexes), ``prompts`` (the caption ids of each split), ``seed``, ``unseen`` and
    ``text_encoder`` (the encoder spec, :mod:`.text_encoder`) beside the dataset's own ``extra``."""
    label_by_text = dict(zip(texts, labels.tolist(), strict=True))
    captions = sorted(label_by_text)
    index = {text: i for i, text in enumerate(captions)}
    caption_ids = torch.tensor([index[text] for text in texts])
    prompts = split_prompts(np.array([label_by_text[text] for text in captions]), unseen, seed)
    parts = [np.flatnonzero(np.isin(caption_ids.numpy(), ids)) for ids in prompts]
    return tensor_splits(
        name,
        [(images[idx], caption_ids[idx], labels[idx]) for idx in parts],
        num_classes=num_classes,
        size=size,
        preprocess=preprocess,
        task="text-to-image",
        extra={
            "captions": captions,
            **extra,
            "prompts": dict(zip(SPLITS, (ids.tolist() for ids in prompts), strict=True)),
            "seed": seed,
            "unseen": unseen,
            "text_encoder": encoder_spec(text_encoder),
        },
    )


@takes_image_options(norm="train", augment=False)
def digits_captions(
    arg: str | None = None,
    *,
    size: int = 16,
    seed: int = 0,
    unseen: float = 0.2,
    text_encoder: str = "random",
    preprocess: ImageOptions,
) -> DataSplits:
    """Digits resized to ``size`` x ``size`` as ``(image, caption_id, label)``, split by caption.

    Thickness and slant are measured on the images as the loaders frame them, and cut at their tertiles
    over all 1797 digits: captioning is labelling, not fitting a model, so val and test images take
    part. ``info.extra`` holds what :func:`captioned_splits` records, ``attributes`` (the cut points,
    for :func:`describe`) and the normalisation (``mean``/``std``); the encoder is ``random`` or a local
    CLIP directory (:mod:`.text_encoder`). Not augmented: a flip or crop would contradict the image's
    slant or thickness words.
    """
    reject_argument("digits-captions", arg)
    check_options("digits-captions", unseen, preprocess)
    images, labels = digit_images()
    framed = resize_and_crop(images, (size, size), preprocess.crop_pct, preprocess.interpolation)
    thresholds = {name: tertiles(values) for name, values in stroke_attributes(framed).items()}
    pairs = describe(framed, thresholds)
    texts = [caption(*pair, digit) for pair, digit in zip(pairs, labels.tolist(), strict=True)]
    return captioned_splits(
        "digits-captions",
        images,
        labels,
        texts,
        num_classes=10,
        size=size,
        seed=seed,
        unseen=unseen,
        text_encoder=text_encoder,
        preprocess=preprocess,
        extra={"attributes": thresholds},
    )
