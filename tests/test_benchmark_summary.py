"""The CSV merge that joins a benchmark's per-process parts into its committed table."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
from summary import merge_csv, read_csv


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_merge_replaces_a_rerun_in_place_and_appends_new_runs(tmp_path: Path) -> None:
    out = _write(
        tmp_path / "table.csv", "budget,method,seed,acc,device\n0.5,l1,0,0.91,cpu\n0.5,l1,1,0.92,cpu\n"
    )
    part = _write(
        tmp_path / "part.csv", "budget,method,seed,acc,device\n0.5,l1,0,0.93,cuda\n0.25,l1,0,0.9,cuda\n"
    )
    merge_csv(out, [part], ["budget", "method", "seed"])
    assert read_csv(out) == [
        {"budget": 0.5, "method": "l1", "seed": 0, "acc": 0.93, "device": "cuda"},
        {"budget": 0.5, "method": "l1", "seed": 1, "acc": 0.92, "device": "cpu"},
        {"budget": 0.25, "method": "l1", "seed": 0, "acc": 0.9, "device": "cuda"},
    ]


def test_merge_refuses_parts_with_other_columns_and_leaves_the_table_alone(tmp_path: Path) -> None:
    table = "budget,method,seed,acc\n0.5,l1,0,0.91\n"
    out = _write(tmp_path / "table.csv", table)
    part = _write(tmp_path / "part.csv", "budget,method,seed,psnr\n0.5,gan,0,19.1\n")
    with pytest.raises(SystemExit, match="merge like with like"):
        merge_csv(out, [part], ["budget", "method", "seed"])
    with pytest.raises(SystemExit, match="no epoch column"):
        merge_csv(out, [out], ["budget", "epoch"])
    assert out.read_text() == table
