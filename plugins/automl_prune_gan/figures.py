"""Figures of a GAN-pruning trial: a sample grid, and the discriminator's accuracy over training."""

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


def save_balance_plot(path: Path, curves: dict[str, list[dict[str, float]]], *, title: str = "") -> Path:
    """D's accuracy on real and on generated samples per epoch, one colour per named run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 3.2))
    for i, (name, history) in enumerate(curves.items()):
        epochs = range(1, len(history) + 1)
        colour = f"C{i}"
        ax.plot(epochs, [h["d_real_acc"] for h in history], color=colour, label=f"{name}: real")
        ax.plot(epochs, [h["d_fake_acc"] for h in history], color=colour, ls="--", label=f"{name}: fake")
    ax.set_xlabel("fine-tuning epoch")
    ax.set_ylabel("D accuracy (patches)")
    ax.set_ylim(-0.02, 1.02)
    ax.axhline(0.5, color="grey", lw=0.6)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return atomic_write_bytes(path, png_bytes(fig, dpi=110))
