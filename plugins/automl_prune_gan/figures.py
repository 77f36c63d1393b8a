"""Figures of a GAN-pruning trial: a sample grid, and the discriminator's accuracy over training."""

from __future__ import annotations

from pathlib import Path

from automl_prune.api import atomic_write_bytes, png_bytes, save_sample_grid

__all__ = ["save_balance_plot", "save_sample_grid"]


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
