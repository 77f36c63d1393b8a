"""The Pareto front of a search (quality up, FLOPs down): as a table, a CSV and a plot."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path

from rich.table import Table

from automl_prune.io import atomic_write_bytes, atomic_write_text, png_bytes
from automl_prune.search.records import SearchInfo, TrialRecord
from automl_prune.search.rundir import stored_path


def pareto_front(records: Sequence[TrialRecord]) -> list[TrialRecord]:
    """Completed, feasible trials with a finite quality that no other trial beats on both quality and
    FLOPs; sorted by FLOPs (a NaN quality, as records of older versions may hold, is never on a front).

    A parameter set run twice (Ray's sampler can repeat one) appears once, as its first trial.
    """
    pool, seen = [], set()
    for r in sorted(records, key=lambda r: r.number):
        key = json.dumps(r.params, sort_keys=True, default=str)
        finite = r.quality is not None and math.isfinite(r.quality)
        if r.state == "complete" and r.feasible and finite and key not in seen:
            seen.add(key)
            pool.append(r)
    front = [
        r
        for r in pool
        if not any(
            o.quality >= r.quality and o.flops <= r.flops and (o.quality > r.quality or o.flops < r.flops)
            for o in pool
        )
    ]
    return sorted(front, key=lambda r: (r.flops, -r.quality, r.number))


def hypervolume(points: Sequence[tuple[float, float]], reference: tuple[float, float]) -> float:
    """The area that ``points`` (quality up, cost down) dominate, bounded by ``reference`` (worst quality,
    worst cost): one number that grows whenever a front gains a point no earlier point beat, so fronts
    of searches can be compared. Points not better than the reference on both count nothing."""
    worst_quality, worst_cost = reference
    inside = sorted((c, q) for q, c in points if q > worst_quality and c < worst_cost)
    area, best = 0.0, worst_quality
    for i, (cost, quality) in enumerate(inside):
        next_cost = inside[i + 1][0] if i + 1 < len(inside) else worst_cost
        best = max(best, quality)  # the best quality at or below this cost, up to the next cost
        area += (best - worst_quality) * (next_cost - cost)
    return area


CSV_COLUMNS = (
    "trial",
    "quality",
    "flops",
    "flops_ratio",
    "n_params",
    "latency_ms",
    "latency_iqr_ms",
    "speedup",
    "latency_noisy",
    "target_flops",
    "model_dir",
    "params",
)


def front_csv(front: Sequence[TrialRecord], info: SearchInfo) -> str:
    """The front as CSV: one row per point, with the quality metric named in a header comment-free column."""
    extra = sorted({k for r in front for k in r.metrics})
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([*CSV_COLUMNS, *extra, "quality_metric"])
    for r in front:
        writer.writerow(
            [
                r.number,
                f"{r.quality:.6g}",
                r.flops,
                f"{r.flops / info.base['flops']:.4f}",
                r.n_params,
                f"{r.latency_ms:.4g}",
                _figure(r.latency_iqr_ms, ".4g"),
                _figure(r.speedup, ".4g"),
                int(r.latency_noisy),
                "" if r.target_flops is None else int(r.target_flops),
                stored_path(r.model_dir, info.run_dir),  # relative to the run directory
                json.dumps(r.params, sort_keys=True),
                *(f"{r.metrics.get(k, float('nan')):.6g}" for k in extra),
                info.quality_metric,
            ]
        )
    return buffer.getvalue()


def _unit(info: SearchInfo) -> str:
    """What one FLOPs figure of this search covers ("forward", "denoising step")."""
    return info.conventions.get("flops_unit", "forward")


def _figure(value: float | None, spec: str, missing: str = "") -> str:
    """``value`` formatted, or ``missing`` for a record written before the field existed."""
    return missing if value is None else format(value, spec)


def _speedup(value: float | None, noisy: bool) -> str:
    """A speed-up cell: the figure, marked when its timing spread too much to trust."""
    return _figure(value, ".2f", "?") + (" noisy" if noisy else "")


def front_table(front: Sequence[TrialRecord], info: SearchInfo, n_trials: int) -> Table:
    """A terminal table of the front with the base model as its first row: FLOPs and latency each as a
    ratio to the base beside the absolute figure."""
    base = info.base
    budget = "none" if info.max_flops is None else f"{info.max_flops / 1e6:.3g}M"
    table = Table(
        title=f"Pareto front: {info.strategy} ({len(front)} of {n_trials} trials; budget {budget}; "
        f"FLOPs per {_unit(info)} = fvcore MACs at batch 1)",
        caption="speed-up: base latency / trial latency (medians, batch 1), base and trial timed "
        "interleaved in the trial; noisy: the timing's spread (IQR) is too large a share of its median "
        "to trust the figure",
    )
    per = f"MFLOPs/{_unit(info)}"
    columns = ("trial", f"val {info.quality_metric}", per, "FLOPs x base", "speed-up", "params (k)")
    for column in (*columns, "latency ms", "IQR ms"):
        table.add_column(column, justify="right")
    if base:
        table.add_row(
            "base",
            f"{base['quality']:.4f}",
            f"{base['flops'] / 1e6:.3f}",
            "1.000",
            _speedup(1.0, bool(base.get("latency_noisy"))),
            f"{base['n_params'] / 1e3:.1f}",
            f"{base['latency_ms']:.3f}",
            _figure(base.get("latency_iqr_ms"), ".3f"),
            style="dim",
        )
    for r in front:
        table.add_row(
            str(r.number),
            f"{r.quality:.4f}",
            f"{r.flops / 1e6:.3f}",
            f"{r.flops / base['flops']:.3f}" if base else "?",
            _speedup(r.speedup, r.latency_noisy),
            f"{r.n_params / 1e3:.1f}",
            f"{r.latency_ms:.3f}",
            _figure(r.latency_iqr_ms, ".3f"),
        )
    return table


def plot_front(
    records: Sequence[TrialRecord],
    front: Sequence[TrialRecord],
    info: SearchInfo,
    baselines: Sequence[tuple[str, Sequence[TrialRecord]]] = (),
) -> bytes:
    """PNG of quality vs FLOPs: every trial, the front, the base model, the budget line, and the fronts
    of ``baselines`` (label, front) from other searches on the same base model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    done = [r for r in records if r.state == "complete"]
    ax.scatter([r.flops / 1e6 for r in done], [r.quality for r in done], c="0.7", s=18, label="trials")
    ax.plot(
        [r.flops / 1e6 for r in front],
        [r.quality for r in front],
        "o-",
        c="C0",
        label=f"{info.strategy} front",
    )
    for i, (label, other) in enumerate(baselines, start=1):
        ax.plot(
            [r.flops / 1e6 for r in other],
            [r.quality for r in other],
            "s--",
            c=f"C{i}",
            alpha=0.8,
            label=label,
        )
    if info.base:
        ax.scatter(
            [info.base["flops"] / 1e6],
            [info.base["quality"]],
            marker="*",
            s=160,
            c="crimson",
            label="base model",
            zorder=3,
        )
    if info.max_flops is not None:
        ax.axvline(info.max_flops / 1e6, ls="--", c="0.4", lw=1, label="FLOPs budget")
    ax.set_xlabel(f"MFLOPs per {_unit(info)} (fvcore, multiply-add = 1, batch 1)")
    ax.set_ylabel(f"validation {info.quality_metric}")
    ax.set_title(f"{info.strategy} on {info.config.get('model')} / {info.config.get('data')}")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return png_bytes(fig)


def write_front(
    run_dir: Path,
    records: Sequence[TrialRecord],
    front: Sequence[TrialRecord],
    info: SearchInfo,
    baselines: Sequence[tuple[str, Sequence[TrialRecord]]] = (),
) -> tuple[Path, Path]:
    """Write pareto.csv and pareto.png (with the ``baselines`` fronts) into the run directory, atomically."""
    csv_path = atomic_write_text(run_dir / "pareto.csv", front_csv(front, info))
    png_path = atomic_write_bytes(run_dir / "pareto.png", plot_front(records, front, info, baselines))
    return csv_path, png_path
