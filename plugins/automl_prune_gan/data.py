"""Offline image-to-image datasets for GAN pruning (task ``image-translation``).

The photo datasets are cut from the colour photos that scikit-image ships (``skimage.data``) and the two
that scikit-learn ships (``sklearn.datasets.load_sample_images``), so a GAN search runs with no download
and no files of its own. Each photo is downscaled (antialiased) so its short side is ``scale`` pixels,
then cut into ``size`` x ``size`` patches on a grid of stride ``size // 2`` (the margin the grid does not
reach is dropped). Nothing is cached on disk; the decoded photos are kept in memory, so the first build
in a process takes about a second and later ones a fraction of that.

The split is fixed *by photo*, so no patch of a val or test photo (nor a pixel of one) is trained on:

- val: ``chelsea`` (a cat on a rug: fur, texture, diagonal edges);
- test: ``coffee`` (a cup on a table: smooth shading, specular highlights, wood grain);
- train: ``astronaut``, ``hubble_deep_field``, ``rocket``, both views of ``stereo_motorcycle`` (kept
  together in train, since they show the same scene), and scikit-learn's ``china`` (a temple among
  trees) and ``flower``.

Val and test are both everyday natural scenes, so model selection and the reported score measure the same
kind of image. ``skimage.data.cat`` is the same array as ``chelsea`` and is left out, so it cannot leak
the val photo into train. Train used to hold the microscopy photos ``retina`` and
``immunohistochemistry`` instead of scikit-learn's two: their red and pink stains taught the colourising
base GAN to paint the val cat's fur red (after 20, 30 and 60 base epochs alike); without them, and with
the two natural photos added, the fur is no longer red at about the same val PSNR. The edges -> colour
base loses 1.1-1.3 dB of val PSNR with the new split (measured in benchmarks/README.md, the GAN section).

Three photo tasks, inputs and targets in [-1, 1]:

- :func:`photo_edges`: Canny edges -> colour photo (pix2pix's edges2photo);
- :func:`photo_colour`: grey -> colour photo (colourisation);
- :func:`photo_unpaired`: grey <-> colour without pairs in train (CycleGAN), paired val/test for PSNR/SSIM.

The user's own folders are read by :mod:`automl_prune_gan.folders`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from skimage import data as skdata
from skimage import feature
from torch.utils.data import Dataset

from automl_prune.api import DataError, DataInfo, DataSplits, file_extra

TASK = "image-translation"
SPLIT_PHOTOS: dict[str, tuple[str, ...]] = {
    "train": (
        "astronaut",
        "hubble_deep_field",
        "rocket",
        "motorcycle_left",
        "motorcycle_right",
        "china",
        "flower",
    ),
    "val": ("chelsea",),
    "test": ("coffee",),
}
SPLITS = ("train", "val", "test")
# ITU-R BT.709 luma, the weights of skimage.color.rgb2gray; they sum to 1, so the grey of an RGB patch in
# [-1, 1] is the same weighted sum as in [0, 1], mapped to [-1, 1].
GREY_WEIGHTS = (0.2125, 0.7154, 0.0721)
# Canny's Gaussian sigma, in pixels of the downscaled photo: 1.5 keeps object outlines and strong texture
# (10-16% edge pixels on the natural photos at scale 128) and drops the pixel noise that sigma 1 keeps.
EDGE_SIGMA = 1.5


@lru_cache(maxsize=1)
def _photos() -> dict[str, np.ndarray]:
    """The decoded sample photos (H, W, 3) uint8, read-only; kept in memory, never written to disk."""
    from sklearn.datasets import load_sample_images  # here, not at import: plugin discovery stays light

    photos = {
        name: getattr(skdata, name)()
        for name in ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field")
    }
    photos["motorcycle_left"], photos["motorcycle_right"], _ = skdata.stereo_motorcycle()
    sklearn_photos = load_sample_images()
    for path, photo in zip(sklearn_photos.filenames, sklearn_photos.images, strict=True):
        photos[Path(path).stem] = np.ascontiguousarray(photo)  # china, flower
    for photo in photos.values():
        photo.setflags(write=False)
    return photos


def downscale(photo: np.ndarray, scale: int) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, h, w) float in [0, 1] with short side ``scale`` (antialiased bilinear)."""
    height, width = photo.shape[:2]
    factor = scale / min(height, width)
    shape = (max(1, round(height * factor)), max(1, round(width * factor)))
    image = torch.tensor(photo).permute(2, 0, 1)[None].float() / 255
    image = F.interpolate(image, size=shape, mode="bilinear", align_corners=False, antialias=factor < 1)
    return image[0].clamp(0, 1)


def to_grey(rgb: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) -> (..., 1, H, W) luma with :data:`GREY_WEIGHTS` (works in [0, 1] and [-1, 1])."""
    weights = torch.tensor(GREY_WEIGHTS, dtype=rgb.dtype).view(3, 1, 1)
    return (rgb * weights).sum(dim=-3, keepdim=True)


def canny_edges(grey: torch.Tensor, sigma: float = EDGE_SIGMA) -> torch.Tensor:
    """(1, H, W) grey in [0, 1] -> (1, H, W) edge map: 1 on a Canny edge, 0 elsewhere."""
    edges = feature.canny(grey[0].double().numpy(), sigma=sigma)
    return torch.from_numpy(edges).float()[None]


def cut_patches(image: torch.Tensor, size: int) -> torch.Tensor:
    """(C, H, W) -> (N, C, size, size) patches on a grid of stride ``size // 2``, row by row."""
    stride = max(1, size // 2)
    if min(image.shape[-2:]) < size:
        return image.new_empty((0, image.shape[0], size, size))
    grid = image.unfold(1, size, stride).unfold(2, size, stride)  # C, rows, cols, size, size
    return grid.permute(1, 2, 0, 3, 4).reshape(-1, image.shape[0], size, size).contiguous()


def _check_sizes(size: int, scale: int) -> None:
    if size < 2 or scale < size:
        raise DataError(
            f"cannot cut {size}x{size} patches from photos whose short side is {scale} pixels",
            "use size >= 2 and scale >= size (defaults: size=32, scale=128)",
        )


def _no_arg(arg: str | None, name: str) -> None:
    if arg is not None:
        raise DataError(f"dataset {name!r} takes no argument (got {arg!r})", f"use --data {name}")


class Patches(Dataset):
    """In-memory image patches, optionally followed by their left-right mirror images.

    The mirrored copies are extra items rather than a random flip, so an item is the same tensor at
    every epoch and in every worker: the augmentation needs no RNG in ``__getitem__``.
    """

    def __init__(self, images: torch.Tensor, photos: Sequence[str], *, flips: bool = False) -> None:
        if len(images) != len(photos):
            raise ValueError(f"{len(images)} patches but {len(photos)} photo names")
        self.images, self.photos, self.flips = images, list(photos), flips

    def __len__(self) -> int:
        return len(self.images) * (2 if self.flips else 1)

    def __getitem__(self, index: int) -> torch.Tensor:
        index = _check_index(index, len(self))
        n = len(self.images)
        image = self.images[index % n]
        return image.flip(-1) if index >= n else image

    def photo(self, index: int) -> str:
        """The name of the photo item ``index`` was cut from."""
        return self.photos[_check_index(index, len(self)) % len(self.images)]


class PatchPairs(Dataset):
    """``(a, b)`` pairs of aligned patches (the same photo region), mirrored together when flipped."""

    def __init__(self, a: Patches, b: Patches) -> None:
        if len(a) != len(b):
            raise ValueError(f"{len(a)} input patches but {len(b)} target patches")
        self.a, self.b = a, b

    def __len__(self) -> int:
        return len(self.a)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.a[index], self.b[index]


class UnpairedPairs(Dataset):
    """``(a, b)`` from two independent domains, for CycleGAN-style training.

    Item ``i`` is ``a[i mod len(a)]`` with ``b[perm[i mod len(b)]]``, ``perm`` a seeded permutation, so
    ``b`` does not depend on ``a`` and both domains are fully used in ``max(len(a), len(b))`` items.
    """

    def __init__(self, a: Dataset | torch.Tensor, b: Dataset | torch.Tensor, *, seed: int) -> None:
        self.a, self.b = a, b
        self.len_a, self.len_b = len(a), len(b)  # type: ignore[arg-type]
        if not (self.len_a and self.len_b):
            raise ValueError("both domains need at least one image")
        self.perm = torch.randperm(self.len_b, generator=torch.Generator().manual_seed(seed)).tolist()

    def __len__(self) -> int:
        return max(self.len_a, self.len_b)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.a[self.index_a(index)], self.b[self.index_b(index)]

    def index_a(self, index: int) -> int:
        return _check_index(index, len(self)) % self.len_a

    def index_b(self, index: int) -> int:
        return self.perm[_check_index(index, len(self)) % self.len_b]


def _check_index(index: int, length: int) -> int:
    if index < 0:
        index += length
    if not 0 <= index < length:
        raise IndexError(f"index {index} out of range for {length} items")
    return index


def _split_patches(
    size: int, scale: int, make: Callable[[torch.Tensor], torch.Tensor]
) -> dict[str, tuple[torch.Tensor, list[str]]]:
    """Per split: the patches of ``make(photo in [0, 1])`` and the photo each came from."""
    photos = _photos()
    out = {}
    for split in SPLITS:
        parts, names = [], []
        for name in SPLIT_PHOTOS[split]:
            patches = cut_patches(make(downscale(photos[name], scale)), size)
            parts.append(patches)
            names += [name] * len(patches)
        out[split] = (torch.cat(parts), names)
    return out


def _paired_photos(
    name: str,
    arg: str | None,
    make_input: Callable[[torch.Tensor], torch.Tensor],
    in_channels: int,
    *,
    size: int,
    scale: int,
    seed: int,
    extra: dict[str, Any],
) -> DataSplits:
    """Paired (input, colour patch) splits; ``make_input`` maps a [0, 1] RGB photo to input channels."""
    _no_arg(arg, name)
    _check_sizes(size, scale)
    # One tensor per photo holding input and target channels, so both are cut on the same grid.
    cut = _split_patches(size, scale, lambda rgb: torch.cat([make_input(rgb), rgb]) * 2 - 1)
    datasets = []
    for split in SPLITS:
        stacked, names = cut[split]
        flips = split == "train"
        a = Patches(stacked[:, :in_channels].contiguous(), names, flips=flips)
        b = Patches(stacked[:, in_channels:].contiguous(), names, flips=flips)
        datasets.append(PatchPairs(a, b))
    return DataSplits(*datasets, _photo_info(name, in_channels, size, seed, paired=True, **extra))


def _photo_info(name: str, in_channels: int, size: int, seed: int, **extra: Any) -> DataInfo:
    """What every photo dataset states: colour targets, the photos of each split, flipped training."""
    return DataInfo(
        name=name,
        task=TASK,
        in_channels=in_channels,
        image_size=(size, size),
        num_classes=0,
        extra={
            "seed": seed,
            "out_channels": 3,
            "photos": {split: list(SPLIT_PHOTOS[split]) for split in SPLITS},
            "train_flips": True,
            **extra,
            **file_extra(in_channels),
        },
    )


def photo_edges(arg: str | None = None, *, size: int = 32, scale: int = 128, seed: int = 0) -> DataSplits:
    """Canny edge map (1 channel, -1 or 1) -> colour patch (3 channels in [-1, 1]), pix2pix-style.

    Edges are found on the whole downscaled grey photo (sigma :data:`EDGE_SIGMA`) before it is cut, so
    a patch has no false edges along its border. Train holds every patch and its mirror image. ``seed``
    is recorded only: the split is fixed by photo and nothing else is random.
    """
    return _paired_photos(
        "photo-edges",
        arg,
        lambda rgb: canny_edges(to_grey(rgb)),
        1,
        size=size,
        scale=scale,
        seed=seed,
        extra={"input": "canny edges", "edge_sigma": EDGE_SIGMA},
    )


def photo_colour(arg: str | None = None, *, size: int = 32, scale: int = 128, seed: int = 0) -> DataSplits:
    """Grey patch (1 channel in [-1, 1]) -> colour patch (3 channels): colourisation.

    The grey is the BT.709 luma of the target (:func:`to_grey`), so input and target agree exactly. Train
    holds every patch and its mirror image; ``seed`` is recorded only (nothing here is random).
    """
    return _paired_photos(
        "photo-colour",
        arg,
        to_grey,
        1,
        size=size,
        scale=scale,
        seed=seed,
        extra={"input": "grey (BT.709 luma)"},
    )


def _grey3(rgb: torch.Tensor) -> torch.Tensor:
    return to_grey(rgb).expand_as(rgb).contiguous()


def photo_unpaired(arg: str | None = None, *, size: int = 32, scale: int = 128, seed: int = 0) -> DataSplits:
    """Grey (A) <-> colour (B) without pairs in train, for CycleGAN; both domains have 3 channels.

    Every training photo is cut in two halves along its long side; a seeded coin per photo picks which
    half gives domain A patches (grey, replicated to 3 channels so CycleGAN's identity loss applies) and
    which gives domain B (colour). The halves share no pixel, so no training A patch has its B partner
    anywhere in train. Each domain also holds its patches' mirror images, and train item ``i`` pairs an A
    patch with a B patch drawn by a seeded permutation (:class:`UnpairedPairs`). Val and test are
    paired (A is the grey of exactly the B patch), so PSNR/SSIM can be measured on them.
    """
    name = "photo-unpaired"
    _no_arg(arg, name)
    _check_sizes(size, scale)
    photos, rng = _photos(), np.random.default_rng(seed)
    domains: dict[str, list[torch.Tensor]] = {"A": [], "B": []}
    domain_names: dict[str, list[str]] = {"A": [], "B": []}
    halves = {}
    for photo in SPLIT_PHOTOS["train"]:
        rgb = downscale(photos[photo], scale)
        axis = -1 if rgb.shape[-1] >= rgb.shape[-2] else -2  # split the long side
        middle = rgb.shape[axis] // 2
        first, second = rgb.narrow(axis, 0, middle), rgb.narrow(axis, middle, rgb.shape[axis] - middle)
        a_first = bool(rng.integers(2))
        halves[photo] = "first half -> A" if a_first else "first half -> B"
        half_a, half_b = (first, second) if a_first else (second, first)
        for domain, half in (("A", _grey3(half_a)), ("B", half_b)):
            patches = cut_patches(half * 2 - 1, size)
            domains[domain].append(patches)
            domain_names[domain] += [photo] * len(patches)
    if not all(domain_names.values()):
        raise DataError(
            f"the half-photos at scale {scale} are too small for {size}x{size} patches",
            "use scale >= 2 * size (defaults: size=32, scale=128)",
        )
    train = UnpairedPairs(
        Patches(torch.cat(domains["A"]), domain_names["A"], flips=True),
        Patches(torch.cat(domains["B"]), domain_names["B"], flips=True),
        seed=seed,
    )
    cut = _split_patches(size, scale, lambda rgb: rgb * 2 - 1)
    val, test = (
        PatchPairs(Patches(_grey3(cut[split][0]), cut[split][1]), Patches(*cut[split]))
        for split in ("val", "test")
    )
    info = _photo_info(
        name,
        3,
        size,
        seed,
        paired=False,
        paired_eval=True,
        domains={"A": "grey (BT.709 luma, 3 equal channels)", "B": "colour"},
        train_halves=halves,
    )
    return DataSplits(train, val, test, info)
