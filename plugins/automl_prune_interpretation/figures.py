"""The mask figure of an ISP trial: validation images, the original's masks and the pruned model's."""

from __future__ import annotations

from pathlib import Path

import torch

from automl_prune.api import atomic_write_bytes, png_bytes


def _displayable(image: torch.Tensor) -> torch.Tensor:
    """[C, H, W] (standardised) -> [H, W] or [H, W, 3] in [0, 1], min-max scaled per image."""
    image = image.detach().float().cpu()
    image = (image - image.min()) / (image.max() - image.min()).clamp_min(1e-8)
    return image[0] if image.shape[0] == 1 else image[:3].permute(1, 2, 0)


def save_mask_figure(
    path: Path,
    images: torch.Tensor,
    original: torch.Tensor,
    pruned: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    iou: torch.Tensor | None = None,
    title: str = "",
) -> Path:
    """A PNG grid: one column per image; rows image / original mask overlay / pruned mask overlay.

    ``original`` and ``pruned`` are masks [N, 1, H, W] in [0, 1]; ``labels`` are the classes explained
    (shown above each image); ``iou`` (per image) goes in the pruned row's titles.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(images)
    fig, axes = plt.subplots(3, n, figsize=(1.4 * n + 0.8, 4.6), squeeze=False)
    rows = ("image", "original mask", "pruned mask")
    for j in range(n):
        picture = _displayable(images[j])
        cmap = "gray" if picture.dim() == 2 else None
        for i, mask in enumerate((None, original, pruned)):
            ax = axes[i][j]
            ax.imshow(picture.numpy(), cmap=cmap, interpolation="nearest")
            if mask is not None:
                ax.imshow(mask[j, 0].detach().float().cpu().numpy(), cmap="jet", alpha=0.45, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(rows[i], fontsize=8)
        if labels is not None:
            axes[0][j].set_title(f"class {int(labels[j])}", fontsize=8)
        if iou is not None:
            axes[2][j].set_title(f"IoU {float(iou[j]):.2f}", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return atomic_write_bytes(path, png_bytes(fig, dpi=100))
