"""The kernel-size figure of a trial: the chosen size of every searchable layer, the predictor's soft
size and the base model's size, one bar per layer in forward order."""

from __future__ import annotations

from pathlib import Path

from automl_prune.api import atomic_write_bytes, png_bytes


def save_kernel_size_figure(
    path: Path,
    chosen: dict[str, int],
    soft: dict[str, float],
    base: dict[str, int],
    *,
    k_max: int,
    title: str = "",
) -> Path:
    """Write a PNG bar chart of ``chosen`` sizes with ``soft`` (dots) and ``base`` (ticks) per layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(chosen)
    x = range(len(names))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.32 * len(names) + 1.5), 3.4))
    ax.bar(x, [chosen[n] for n in names], color="tab:blue", alpha=0.8, label="chosen (built CNN)")
    ax.scatter(x, [soft[n] for n in names], color="tab:orange", zorder=3, s=14, label="soft size (predictor)")
    ax.scatter(x, [base[n] for n in names], color="k", marker="_", s=120, zorder=3, label="base model")
    ax.set_xticks(list(x), names, rotation=70, ha="right", fontsize=6)
    ax.set_yticks(range(1, k_max + 1, 2))
    ax.set_ylim(0, k_max + 2)
    ax.set_ylabel("kernel size")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper right", ncols=3)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return atomic_write_bytes(path, png_bytes(fig, dpi=110))
