"""Figures of the prompt experts: which prompts each expert serves, how large each is against how hard its
prompts are, and what each generates (methods/prompt.md, "What to show")."""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from pathlib import Path
from types import ModuleType

import torch

from automl_prune.api import AutomlPruneError, atomic_write_bytes, png_bytes, save_sample_grid

SHOWN = 14  # captions listed per expert before "... and N more"
CAPTION_CHARS = 44  # a caption longer than this is cut, so columns stay one line per prompt
COLUMN_IN = 2.6  # inches per expert column
LINE_IN = 0.17  # inches per table line


class FigureInputError(AutomlPruneError, ValueError):
    """Figure inputs that disagree with each other; a ValueError too, as callers pass plain values."""


def _check_lengths(what: str, n: int, **named: Sequence[object]) -> None:
    """Every sequence in ``named`` has ``n`` entries (``what`` says what they are per entry)."""
    for name, values in named.items():
        if len(values) != n:
            raise FigureInputError(
                f"{name} has {len(values)} entries for {n} {what}",
                f"pass one {name} entry per {what[:-1] if what.endswith('s') else what}",
            )


def _columns(
    captions: Sequence[str], parts: Sequence[int], ratios: Sequence[float], held_out: Collection[int]
) -> list[tuple[str, list[tuple[str, bool]]]]:
    """Per expert present in ``parts`` (ascending), its header and its shown lines, each with whether it is
    a held-out caption; checks the inputs agree."""
    _check_lengths("captions", len(captions), parts=parts)
    if not captions:
        raise FigureInputError(
            "no captions to tabulate", "route at least one prompt before drawing the table"
        )
    if min(parts) < 0 or max(parts) >= len(ratios):
        raise FigureInputError(
            f"parts name experts {min(parts)}..{max(parts)} but ratios has {len(ratios)} entries",
            "pass one FLOPs ratio per expert, indexed by the expert numbers in parts",
        )
    outside = [i for i in held_out if not 0 <= i < len(captions)]
    if outside:
        raise FigureInputError(
            f"held_out names caption indices {sorted(outside)[:5]} outside 0..{len(captions) - 1}",
            "pass indices into captions",
        )
    columns = []
    for k in sorted(set(parts)):
        mine = sorted((i for i, p in enumerate(parts) if p == k), key=lambda i: captions[i].casefold())
        lines = [(_cut(captions[i], i in held_out), i in held_out) for i in mine[:SHOWN]]
        if len(mine) > SHOWN:
            lines.append((f"... and {len(mine) - SHOWN} more", False))
        columns.append((f"expert {k}: {ratios[k]:.2f} of the FLOPs,\n{len(mine)} prompts", lines))
    return columns


def _cut(caption: str, held_out: bool) -> str:
    """One line of at most CAPTION_CHARS characters, " *" included for a held-out caption."""
    caption, mark = " ".join(caption.split()), " *" if held_out else ""
    room = CAPTION_CHARS - len(mark)
    return (caption if len(caption) <= room else caption[: room - 1].rstrip() + "…") + mark


def _pyplot() -> ModuleType:
    """pyplot on the Agg backend, imported late so the package loads fast and without a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def prompts_by_expert(
    captions: Sequence[str],
    parts: Sequence[int],
    ratios: Sequence[float],
    path: Path,
    *,
    held_out: Collection[int] = (),
) -> Path:
    """A column per expert: its FLOPs ratio and prompt count, then its captions sorted (held-out ones in
    italics with a "*"), so a reader can judge whether the router grouped prompts by content."""
    columns = _columns(captions, parts, ratios, set(held_out))
    plt = _pyplot()
    rows = max(len(lines) for _, lines in columns)
    fig = plt.figure(figsize=(COLUMN_IN * len(columns), LINE_IN * (rows + 4) + 0.5))
    ax = fig.add_axes((0.0, 0.06, 1.0, 0.86))
    ax.set_xlim(0, len(columns))
    ax.set_ylim(rows + 0.5, -2.2)
    ax.axis("off")
    for c, (header, lines) in enumerate(columns):
        if c % 2:
            ax.axvspan(c, c + 1, color="0.94", zorder=0)
        ax.text(c + 0.04, -0.9, header, fontsize=8, fontweight="bold", va="center")
        for r, (line, held) in enumerate(lines):
            style = "italic" if held else "normal"
            ax.text(c + 0.04, r + 0.5, line, fontsize=7, va="center", style=style)
    fig.suptitle(f"prompts by expert ({len(captions)} prompts, {len(columns)} experts)", fontsize=9)
    if held_out:
        fig.text(0.01, 0.015, "* held out: never seen in training", fontsize=7, style="italic")
    return atomic_write_bytes(path, png_bytes(fig, dpi=110))


def _ranks(values: Sequence[float]) -> list[float]:
    """Average ranks (ties share the mean of their positions)."""
    return [sum(v < x for v in values) + (sum(v == x for v in values) - 1) / 2 for x in values]


def rank_correlation(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation of ``a`` and ``b`` over the pairs where both are finite; NaN where it is
    undefined (fewer than two pairs, or one side constant)."""
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if math.isfinite(x) and math.isfinite(y)]
    if len(pairs) < 2:
        return float("nan")
    ra, rb = (torch.tensor(_ranks(side), dtype=torch.float64) for side in zip(*pairs, strict=True))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    norm = float(ra.norm() * rb.norm())
    return float(ra @ rb) / norm if norm else float("nan")


def expert_sizes(
    ratios: Sequence[float],
    counts: Sequence[int],
    difficulty: Sequence[float],
    target: float,
    path: Path,
) -> Path:
    """Each expert's FLOPs ratio with its prompt count, against the target and the achieved
    prompt-weighted mean (left), and the dense UNet's denoising MSE on its prompts (right): do harder
    prompt groups get larger experts?"""
    _check_lengths("experts", len(ratios), counts=counts, difficulty=difficulty)
    if not ratios:
        raise FigureInputError("no experts to draw", "pass one FLOPs ratio per expert")
    if min(counts) < 0 or sum(counts) == 0:
        raise FigureInputError(
            f"prompt counts {list(counts)} are negative or all zero",
            "pass how many prompts the router sends to each expert",
        )
    achieved = sum(r * n for r, n in zip(ratios, counts, strict=True)) / sum(counts)
    plt = _pyplot()
    experts = list(range(len(ratios)))
    fig, (left, right) = plt.subplots(1, 2, sharex=True, figsize=(max(7.5, 1.1 * len(ratios) + 4), 3.6))
    bars = left.bar(experts, ratios, color="tab:blue")
    left.bar_label(bars, labels=[f"n={n}" for n in counts], label_type="center", color="white", fontsize=7)
    left.axhline(target, color="black", ls="--", lw=1, label=f"target mean {target:.2f}")
    left.axhline(achieved, color="tab:red", ls="--", lw=1, label=f"achieved mean {achieved:.2f} (per prompt)")
    left.set_ylim(0, 1.18 * max(1.0, *ratios))
    left.set_xlabel("expert")
    left.set_ylabel("FLOPs per guided step\n(fraction of the dense UNet)")
    left.set_title("expert size", fontsize=9)
    left.legend(fontsize=7, loc="upper left")
    right.bar(experts, [d if math.isfinite(d) else 0.0 for d in difficulty], color="tab:orange")
    for k in (k for k, d in enumerate(difficulty) if not math.isfinite(d)):
        right.text(k, 0, "no prompts", ha="center", va="bottom", fontsize=7)
    right.set_xticks(experts, labels=[str(k) for k in experts])
    right.set_xlabel("expert")
    right.set_ylabel("dense UNet denoising MSE\non the expert's prompts (harder: higher)")
    right.set_title("prompt difficulty", fontsize=9)
    rho = rank_correlation(difficulty, ratios)
    found = (
        f"rank correlation of difficulty and size: {rho:+.2f}" if math.isfinite(rho) else "too few experts"
    )
    fig.suptitle(f"Do harder prompt groups get larger experts? ({found})", fontsize=9)
    fig.tight_layout()
    return atomic_write_bytes(path, png_bytes(fig, dpi=110))


def expert_samples(rows: Sequence[tuple[str, torch.Tensor]], path: Path, *, title: str) -> Path:
    """A row of generated samples per expert (label e.g. "expert 1 (0.48)", images (n, C, H, W) in
    [-1, 1]); the shared sample grid, after checking every row is a non-empty image batch."""
    if not rows:
        raise FigureInputError("no expert rows to draw", "pass one (label, images) pair per expert")
    for label, images in rows:
        if images.dim() != 4 or len(images) == 0 or images.shape[1] not in (1, 3):
            raise FigureInputError(
                f"{label!r}: images of shape {tuple(images.shape)}, not a non-empty (n, C, H, W) batch",
                "pass the expert's samples as one (n, 1 or 3, H, W) tensor in [-1, 1]",
            )
    return save_sample_grid(path, rows, title=title)
