"""Pareto front: dominance, feasibility, and the CSV and plot a search leaves behind."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from automl_prune.search.pareto import hypervolume, pareto_front, write_front
from automl_prune.search.records import SearchInfo, TrialRecord


def rec(
    n: int, q: float | None, f: int | None, *, feasible: bool = True, state: str = "complete"
) -> TrialRecord:
    return TrialRecord(
        number=n,
        state=state,
        quality=q,
        flops=f,
        n_params=10,
        latency_ms=1.0,
        feasible=feasible,
        params={"x": n},
        metrics={"test_accuracy": 0.5},
    )


def info(tmp_path: Path) -> SearchInfo:
    return SearchInfo(
        name="s",
        strategy="magnitude",
        run_dir=tmp_path,
        quality_metric="accuracy",
        base={"quality": 0.95, "flops": 1000.0, "n_params": 100.0, "latency_ms": 2.0},
        max_flops=600.0,
        config={"model": "m", "data": "d"},
        conventions={},
    )


def test_front_keeps_only_non_dominated_feasible_trials() -> None:
    records = [
        rec(0, 0.90, 500),
        rec(1, 0.80, 300),
        rec(2, 0.85, 500),  # 2 is dominated by 0
        rec(3, 0.95, 700, feasible=False),
        rec(4, None, None, state="failed"),
        rec(5, 0.80, 300),
        rec(6, 0.70, 200),  # 5 ties with 1: both stay
    ]
    front = pareto_front(records)
    assert [r.number for r in front] == [6, 1, 5, 0]


def test_front_files(tmp_path: Path) -> None:
    records = [rec(0, 0.9, 500), rec(1, 0.8, 300), rec(2, 0.7, 400)]
    front = pareto_front(records)
    csv_path, png_path = write_front(tmp_path, records, front, info(tmp_path))
    rows = list(csv.DictReader(csv_path.open()))
    assert [int(r["trial"]) for r in rows] == [1, 0]
    assert rows[0]["flops_ratio"] == "0.3000" and rows[0]["test_accuracy"] == "0.5"
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_hypervolume_is_the_area_the_front_dominates_up_to_the_reference() -> None:
    # by hand, reference (quality 0, cost 1): (0.5, 0.2) covers [0.2, 0.6) x 0.5 = 0.2, then (0.8, 0.6)
    # raises it to 0.8 on [0.6, 1) = 0.32; (0.4, 0.7) is dominated; (0.9, 1.2) is beyond the reference
    points = [(0.8, 0.6), (0.5, 0.2), (0.4, 0.7), (0.9, 1.2)]
    assert hypervolume(points, (0.0, 1.0)) == pytest.approx(0.52)
    assert hypervolume(points, (0.6, 1.0)) == pytest.approx(0.2 * 0.4)  # only (0.8, 0.6) beats 0.6
    assert hypervolume([], (0.0, 1.0)) == 0.0
    assert hypervolume([(0.5, 0.2), (0.5, 0.2)], (0.0, 1.0)) == pytest.approx(0.4)  # a repeat adds nothing
