"""Captioned photo patches for ``text-to-image``: square patches cut at seeded places from eight of
scikit-image's sample photos (shipped inside the package, so nothing is downloaded), captioned with
their brightness, their place in the photo and the photo ("a dark patch from the top left of the cat
photo"), split by caption like :func:`~.captions.digits_captions`. The label is the photo.

RGB: the UNet's channels follow ``DataInfo.in_channels``, and colour is much of what tells the coffee,
the cat and the astronaut apart at 16 x 16; the four grey photos are repeated over the three channels.
The place is where the patch was cut (a third of the possible positions across and down), so it is
recorded, not measured; the brightness (mean intensity) is measured, cut at tertiles within each photo
so every photo has dark and bright patches.
"""

from __future__ import annotations

import numpy as np
import torch

from automl_prune.data.base import DataSplits
from automl_prune.data.common import resize_and_crop
from automl_prune.data.preprocessing import ImageOptions, takes_image_options
from automl_prune.errors import DataError
from automl_prune.text_to_image.captions import (
    captioned_splits,
    check_options,
    reject_argument,
    tertiles_by_label,
    words_by_label,
)

# scikit-image loader -> the photo's word in a caption; colour photos first.
PHOTOS = {
    "astronaut": "astronaut",
    "coffee": "coffee",
    "chelsea": "cat",
    "rocket": "rocket",
    "camera": "cameraman",
    "coins": "coins",
    "grass": "grass",
    "brick": "brick",
}
PLACES = (
    ("top left", "top", "top right"),
    ("left", "centre", "right"),
    ("bottom left", "bottom", "bottom right"),
)
ATTRIBUTE_WORDS: dict[str, tuple[str, str, str]] = {"brightness": ("dark", "medium", "bright")}


def photo(name: str, shorter_side: int) -> torch.Tensor:
    """The sample photo ``name`` as (3, H, W) in [0, 1], resized (aspect kept) to ``shorter_side``."""
    from skimage import data  # heavy: loaded when the dataset is built

    pixels = torch.from_numpy(np.asarray(getattr(data, name)(), dtype=np.float32) / 255.0)
    image = pixels.permute(2, 0, 1) if pixels.ndim == 3 else pixels.expand(3, -1, -1)
    height, width = image.shape[-2:]
    scale = shorter_side / min(height, width)
    target = (round(height * scale), round(width * scale))
    return resize_and_crop(image[None], target)[0]


def place(top: np.ndarray, left: np.ndarray, room: tuple[int, int]) -> list[str]:
    """Patch corners -> place words: the third of the ``room`` (possible corner positions, down and
    across) each corner falls in."""
    rows = np.minimum(3 * top // room[0], 2)
    columns = np.minimum(3 * left // room[1], 2)
    return [PLACES[row][column] for row, column in zip(rows.tolist(), columns.tolist(), strict=True)]


def patches(
    image: torch.Tensor, count: int, size: int, rng: np.random.Generator
) -> tuple[torch.Tensor, list[str]]:
    """``count`` patches of ``size`` x ``size`` at uniformly drawn corners of ``image``, and their places."""
    room = (image.shape[1] - size + 1, image.shape[2] - size + 1)
    top, left = rng.integers(0, room[0], count), rng.integers(0, room[1], count)
    cut = torch.stack([image[:, t : t + size, x : x + size] for t, x in zip(top, left, strict=True)])
    return cut, place(top, left, room)


def brightness(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Images (N, C, H, W) in [0, 1] -> per-image ``brightness``: mean intensity over pixels and channels."""
    return {"brightness": images.clamp(0, 1).mean(dim=(1, 2, 3))}


def describe(
    images: torch.Tensor, thresholds: dict[str, list[list[float]]], labels: torch.Tensor
) -> list[tuple[str, ...]]:
    """Patches (N, 3, H, W) in [0, 1] of photos ``labels`` -> (brightness word,) per patch, cut at their
    photo's points (``info.extra["attributes"]``)."""
    return words_by_label(brightness(images), thresholds, labels, ATTRIBUTE_WORDS)


def caption(bright: str, where: str, label: int) -> str:
    """Brightness, place and photo, always all three (as the other captioned datasets' words)."""
    return f"a {bright} patch from the {where} of the {list(PHOTOS.values())[label]} photo"


@takes_image_options(norm="train", augment=False)
def photo_captions(
    arg: str | None = None,
    *,
    per_photo: int = 400,
    scale: float = 0.25,
    size: int = 16,
    seed: int = 0,
    unseen: float = 0.2,
    text_encoder: str = "random",
    preprocess: ImageOptions,
) -> DataSplits:
    """``per_photo`` patches of each photo, each ``scale`` of the photo's shorter side across, at
    ``size`` x ``size`` pixels, as ``(image, caption_id, label)`` split by caption; ``seed`` draws the
    corners and the split. ``info.extra["attributes"]`` holds the brightness cut points per photo, for
    :func:`describe`; ``photos`` the caption word of each label.
    """
    reject_argument("photo-captions", arg)
    check_options("photo-captions", unseen, preprocess)
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not 0 < scale <= 1:
        raise DataError(
            f"scale={scale!r} is outside (0, 1]", "scale is the patch side over the photo's shorter side"
        )
    if isinstance(per_photo, bool) or not isinstance(per_photo, int) or per_photo < 3:
        raise DataError(
            f"per_photo={per_photo!r} is not a count of 3 or more", "e.g. --data-arg per_photo=400"
        )
    rng = np.random.default_rng(seed)
    cut = [patches(photo(name, round(size / scale)), per_photo, size, rng) for name in PHOTOS]
    images = torch.cat([pixels for pixels, _ in cut])
    places = [where for _, wheres in cut for where in wheres]
    labels = torch.arange(len(PHOTOS)).repeat_interleave(per_photo)
    framed = resize_and_crop(images, (size, size), preprocess.crop_pct, preprocess.interpolation)
    thresholds = tertiles_by_label(brightness(framed), labels, len(PHOTOS))
    words = describe(framed, thresholds, labels)
    texts = [
        caption(bright, where, label)
        for (bright,), where, label in zip(words, places, labels.tolist(), strict=True)
    ]
    return captioned_splits(
        "photo-captions",
        images,
        labels,
        texts,
        num_classes=len(PHOTOS),
        size=size,
        seed=seed,
        unseen=unseen,
        text_encoder=text_encoder,
        preprocess=preprocess,
        extra={
            "attributes": thresholds,
            "photos": list(PHOTOS.values()),
            "per_photo": per_photo,
            "scale": scale,
        },
    )
