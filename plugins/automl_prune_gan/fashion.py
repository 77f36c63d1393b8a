"""Fashion-MNIST image translation: Canny edges -> garment, pix2pix's edges2shoes on 55,000 images.

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

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from automl_prune.api import DataInfo, DataSplits, fashion_mnist, file_extra
from automl_prune_gan.data import TASK, canny_edges

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
    garments = fashion_mnist(
        arg, root=root, size=size, limit_train=limit_train, val_size=val_size, seed=seed, mean=0.5, std=0.5
    )
    splits = [
        TensorDataset(garment_edges(images), images)
        for images in (split.tensors[0] for split in (garments.train, garments.val, garments.test))
    ]
    info = DataInfo(
        name="fashion-edges",
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
            "paired": True,
            **file_extra(1),
        },
    )
    return DataSplits(*splits, info)
