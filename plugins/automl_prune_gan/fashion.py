"""Fashion-MNIST image translation: Canny edges -> garment, pix2pix's edges2shoes on 55,000 images.

``fashion-edges`` is paired (pix2pix); ``fashion-unpaired`` is the same task with unpaired training
halves (CycleGAN) and the same paired val/test.

The photo datasets (``data.py``) hold 7 training photos: too few for a base GAN whose outputs look
right, whatever its training length (benchmarks/README.md, the GAN bases). Fashion-MNIST gives the base
generator 55,000 training images of one domain, read offline by the core's loader (Debian's
``dataset-fashion-mnist``). Images are resized from 28x28 to ``size`` (32 by default, since the U-Net
halves its input 4 times) and mapped to [-1, 1]; the edges are Canny on each resized image, computed
once when the dataset is built. The splits are the core's: val holds 5,000 images out of train
(stratified, seeded), test is the official 10,000, and ``limit_train`` keeps a stratified subset of train.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from automl_prune.api import DataInfo, DataSplits, fashion_mnist, file_extra
from automl_prune_gan.data import TASK, UnpairedPairs, canny_edges

# Canny's Gaussian sigma in pixels of the 32x32 image, chosen by eye on val garments (it keeps the outline
# and the main inner lines: collars, zips, soles); not tuned.
EDGE_SIGMA = 1.0


def garment_edges(images: torch.Tensor, sigma: float = EDGE_SIGMA) -> torch.Tensor:
    """(N, 1, H, W) images in [-1, 1] -> (N, 1, H, W) edge maps: 1 on an edge, -1 elsewhere.

    The edges are Canny's on each image padded with black (the garments' background) beyond the reach of
    its Gaussian, so a garment that touches the image border is outlined there too.
    """
    pad = int(np.ceil(4 * sigma)) + 2  # skimage's Gaussian reaches 4 sigma, the Sobel step one more pixel
    grey = F.pad((images + 1) / 2, (pad, pad, pad, pad))
    edges = torch.stack([canny_edges(image, sigma)[:, pad:-pad, pad:-pad] for image in grey])
    return edges * 2 - 1


def fashion_edges(
    arg: str | None = None,
    *,
    root: str | Path | None = None,
    size: int = 32,
    limit_train: int | None = None,
    val_size: int = 5000,
    seed: int = 0,
) -> DataSplits:
    """Canny edge map (1 channel, -1 or 1) -> Fashion-MNIST garment (1 channel in [-1, 1]), paired.

    ``arg`` or ``root`` is the Fashion-MNIST folder, as for the core's ``fashion-mnist``.
    """
    info = _info("fashion-edges", size, seed, limit_train, val_size, paired=True)
    return DataSplits(*_edge_pairs(*_garments(arg, root, size, limit_train, val_size, seed)), info)


def fashion_unpaired(
    arg: str | None = None,
    *,
    root: str | Path | None = None,
    size: int = 32,
    limit_train: int | None = None,
    val_size: int = 5000,
    seed: int = 0,
) -> DataSplits:
    """Canny edges (A) <-> garment (B) without pairs in train, for CycleGAN; paired val/test.

    The training garments are shuffled (seeded) and halved: the first half gives domain A (only its edge
    maps), the second domain B (only its garments), so no training edge map has its garment anywhere in
    train, and each domain holds half the training garments. Both domains have 1 channel, so CycleGAN's
    identity loss applies. Val and test are the paired splits of :func:`fashion_edges`.
    """
    garments, val, test = _garments(arg, root, size, limit_train, val_size, seed)
    order = torch.randperm(len(garments), generator=torch.Generator().manual_seed(seed))
    half = len(order) // 2
    train = UnpairedPairs(garment_edges(garments[order[:half]]), garments[order[half:]], seed=seed)
    info = _info(
        "fashion-unpaired",
        size,
        seed,
        limit_train,
        val_size,
        paired=False,
        paired_eval=True,
        domains={"A": "canny edges", "B": "garment"},
    )
    return DataSplits(train, *_edge_pairs(val, test), info)


def _garments(
    arg: str | None, root: str | Path | None, size: int, limit_train: int | None, val_size: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The core's Fashion-MNIST train, val and test images in [-1, 1], labels dropped."""
    splits = fashion_mnist(
        arg, root=root, size=size, limit_train=limit_train, val_size=val_size, seed=seed, mean=0.5, std=0.5
    )
    return splits.train.tensors[0], splits.val.tensors[0], splits.test.tensors[0]


def _edge_pairs(*splits: torch.Tensor) -> list[TensorDataset]:
    """Each split of garments as (edge map, garment) pairs."""
    return [TensorDataset(garment_edges(images), images) for images in splits]


def _info(name: str, size: int, seed: int, limit_train: int | None, val_size: int, **extra: Any) -> DataInfo:
    return DataInfo(
        name=name,
        task=TASK,
        in_channels=1,
        image_size=(size, size),
        num_classes=0,
        extra={
            "seed": seed,
            "out_channels": 1,
            "input": "canny edges",
            "edge_sigma": EDGE_SIGMA,
            "limit_train": limit_train,
            "val_size": val_size,
            **extra,
            **file_extra(1),
        },
    )
