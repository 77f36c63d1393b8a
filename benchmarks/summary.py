"""Mean ± std tables over seeds, printed by every benchmark script in the same Markdown shape; CSV I/O.

A benchmark split over processes (one per seed, budget or device, each with its own ``--out``) is merged
into the committed table with::

    python benchmarks/summary.py OUT PART [PART ...] --key budget,method,seed
"""

from __future__ import annotations

import argparse
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


def read_csv(path: Path) -> list[dict[str, Any]]:
    """Rows of a benchmark CSV, numbers as floats (ints where written without a point), the rest as text."""
    return _read(path)[1]


def _read(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """A CSV's columns (even when it has no rows) and its typed rows, in one pass over the file."""
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        rows = [{k: _number(v) for k, v in row.items()} for row in reader]
        return list(reader.fieldnames or ()), rows


def _number(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def merge_csv(out: Path, parts: Sequence[Path], key: Sequence[str]) -> list[dict[str, Any]]:
    """``out``'s rows (if it exists) then each part's, a later row replacing an earlier one with the same
    ``key`` values in place; every file must have ``out``'s columns, so no column is silently dropped."""
    files = [out, *parts] if out.exists() else list(parts)
    merged: dict[tuple[Any, ...], dict[str, Any]] = {}
    fields: list[str] | None = None
    for path in files:
        header, rows = _read(path)
        if fields is not None and header != fields:
            raise SystemExit(
                f"{path} has columns {header}, but {files[0]} has {fields}: merge like with like"
            )
        fields = header
        missing = [k for k in key if k not in header]
        if missing:
            raise SystemExit(f"{path} has no {', '.join(missing)} column: pass --key with columns it has")
        for row in rows:
            merged[tuple(row[k] for k in key)] = row
    assert fields is not None
    write_csv(out, list(merged.values()), fields)
    return list(merged.values())


def main() -> None:
    parser = argparse.ArgumentParser(description="merge part CSVs of one benchmark into OUT")
    parser.add_argument("out", type=Path)
    parser.add_argument("parts", type=Path, nargs="+")
    parser.add_argument("--key", default="budget,method,seed", help="columns that name one run")
    args = parser.parse_args()
    rows = merge_csv(args.out, args.parts, args.key.split(","))
    print(f"wrote {args.out}: {len(rows)} rows")


if __name__ == "__main__":
    main()
