"""Mean ± std tables over seeds, printed by every benchmark script in the same Markdown shape."""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any


def mean_std(values: Sequence[float]) -> str:
    """``mean ± std`` (sample std), or "-" when a value is missing (NaN)."""
    if any(math.isnan(v) for v in values):
        return "-"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4g} ± {std:.2g}"


def summary_table(
    rows: Sequence[dict[str, Any]],
    keys: Sequence[str],
    order: Iterable[tuple[Any, ...]],
    metrics: Sequence[str],
) -> str:
    """One line per group of ``rows`` sharing the ``keys`` values in ``order``: mean ± std of ``metrics``."""
    lines = ["| " + " | ".join([*keys, *metrics]) + " |", "|" + "---|" * (len(keys) + len(metrics))]
    for values in order:
        group = [r for r in rows if tuple(r[k] for k in keys) == tuple(values)]
        if group:
            labels = [f"{v:g}" if isinstance(v, float) else str(v) for v in values]
            lines.append(
                "| " + " | ".join([*labels, *(mean_std([r[m] for r in group]) for m in metrics)]) + " |"
            )
    return "\n".join(lines)


def budget_table(rows: Sequence[dict[str, Any]], methods: Sequence[str], metrics: Sequence[str]) -> str:
    """:func:`summary_table` by budget (largest first), then method in the given order."""
    budgets = sorted({r["budget"] for r in rows}, reverse=True)
    return summary_table(rows, ("budget", "method"), [(b, m) for b in budgets for m in methods], metrics)


def write_csv(path: Path, rows: Sequence[dict[str, Any]], fields: Sequence[str]) -> None:
    """``rows`` as CSV (floats to 5 significant digits), keeping only ``fields``; rewritten whole, so a
    script can call it after every run and a crash loses nothing finished."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(fields), extrasaction="ignore")
        writer.writeheader()
        writer.writerows({k: f"{v:.5g}" if isinstance(v, float) else v for k, v in r.items()} for r in rows)
