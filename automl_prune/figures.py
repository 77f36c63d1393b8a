"""Figures several tasks share: a grid of image samples, one row per model or role."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from automl_prune.io import atomic_write_bytes, png_bytes


def _image(x: torch.Tensor) -> torch.Tensor:
    """(C, H, W) in [-1, 1] -> (H, W, 3) in [0, 1] for imshow (grey replicated)."""
    x = ((x.detach().cpu().float() + 1) / 2).clamp(0, 1)
    return (x.expand(3, -1, -1) if x.shape[0] == 1 else x).permute(1, 2, 0)


def save_sample_grid(path: Path, rows: Sequence[tuple[str, torch.Tensor]], *, title: str = "") -> Path:
    """One row per (label, images) pair, e.g. input / original / pruned / target; a column per sample."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(len(images) for _, images in rows)
    fig, axes = plt.subplots(len(rows), n, figsize=(1.1 * n + 0.9, 1.15 * len(rows)), squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c in range(n):
            ax = axes[r][c]
            ax.imshow(_image(images[c]), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel(label, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return atomic_write_bytes(path, png_bytes(fig, dpi=110))
