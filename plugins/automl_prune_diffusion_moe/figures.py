"""Figures of the mixture of experts: the timestep similarity heat map with the intervals drawn on it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from automl_prune.api import AutomlPruneError, atomic_write_bytes, png_bytes
from automl_prune_diffusion_moe.intervals import check_bounds

TICKS = 6  # timestep labels per axis


def similarity_heatmap(
    S: torch.Tensor,
    timesteps: Sequence[int],
    bounds: Sequence[tuple[int, int]],
    path: Path,
    *,
    title: str = "",
) -> Path:
    """S over the grid (t = 0, low noise, at the top left), each interval outlined on the diagonal and
    its edges dashed across the map; the subtitle lists the intervals' timestep ranges."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    S = torch.as_tensor(S, dtype=torch.float64).cpu()
    check_bounds(bounds, len(S))
    if len(timesteps) != len(S):
        raise AutomlPruneError(
            f"{len(timesteps)} timesteps label a {len(S)}-point similarity matrix",
            "pass the grid the matrix was computed on",
        )
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    image = ax.imshow(S.numpy(), cmap="viridis", vmin=min(0.0, float(S.min())), vmax=1.0)
    ticks = sorted({round(i) for i in torch.linspace(0, len(S) - 1, min(TICKS, len(S))).tolist()})
    labels = [str(timesteps[i]) for i in ticks]
    ax.set_xticks(ticks, labels=labels)
    ax.set_yticks(ticks, labels=labels)
    for a, b in bounds:
        ax.add_patch(Rectangle((a - 0.5, a - 0.5), b - a, b - a, fill=False, edgecolor="white", lw=1.6))
        if a > 0:
            ax.axvline(a - 0.5, color="white", lw=0.7, ls="--")
            ax.axhline(a - 0.5, color="white", lw=0.7, ls="--")
    ax.set_xlabel("timestep t")
    ax.set_ylabel("timestep t'")
    fig.colorbar(image, ax=ax, label="similarity")
    ranges = ", ".join(f"{timesteps[a]}-{timesteps[b - 1]}" for a, b in bounds)
    heading = f"{title}\n" if title else ""
    ax.set_title(f"{heading}{len(bounds)} intervals: {ranges}", fontsize=8)
    fig.tight_layout()
    return atomic_write_bytes(path, png_bytes(fig, dpi=110))


def budget_bars(
    flops: Sequence[float],
    spent: Sequence[float],
    intervals: Sequence[tuple[int, int]],
    budget: float,
    path: Path,
) -> Path:
    """Per expert, its FLOPs per step beside the budget per step (left), and each interval's share of the
    sampling run's FLOPs (n_j x FLOPs_j over the total, right): where the agent spent the compute."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{a}-{b - 1}" for a, b in intervals]
    total = sum(spent)
    fig, (left, right) = plt.subplots(1, 2, figsize=(7.5, 3.2))
    left.bar(labels, [f / 1e6 for f in flops], color="tab:blue")
    left.axhline(budget / 1e6, color="black", ls="--", lw=1, label="budget per step")
    left.set_ylabel("MFLOPs per step")
    left.set_xlabel("interval (timesteps)")
    left.legend(fontsize=7)
    right.bar(labels, [s / total for s in spent] if total else [0.0] * len(spent), color="tab:orange")
    right.set_ylabel("share of the sampling FLOPs")
    right.set_xlabel("interval (timesteps)")
    fig.tight_layout()
    return atomic_write_bytes(path, png_bytes(fig, dpi=110))
