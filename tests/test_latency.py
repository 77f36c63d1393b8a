"""Latency you can trust: median and IQR of timed blocks, a noisy flag, base and candidate interleaved,
records and fronts that carry the spread and the speed-up, and ONNX Runtime timing."""

from __future__ import annotations

import csv
import io
import json
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from automl_prune.errors import AutomlPruneError
from automl_prune.latency import (
    TARGET_BLOCKS,
    Latency,
    latency_metrics,
    measure_calls,
    measure_latency,
    time_interleaved,
)
from automl_prune.search.pareto import front_csv, front_table
from automl_prune.search.records import TRIALS_FILE, SearchInfo, TrialRecord, load_records, save_records

FACTS = {"batch": 1, "device": "cpu", "threads": 1}


MS = 2**-10  # about a millisecond, exact in binary: the fake clock's sums are exact


class FakeClock:
    """A clock that only moves when a fake call says it took some time: timings are exact."""

    def __init__(self) -> None:
        self.now = 0.0
        self.log: list[str] = []

    def __call__(self) -> float:
        return self.now

    def call(self, name: str, seconds: float):
        def run() -> None:
            self.log.append(name)
            self.now += seconds

        return run


def test_median_and_iqr_of_known_samples() -> None:
    t = Latency.of([4.0, 1.0, 100.0, 3.0, 2.0], **FACTS)  # quartiles 2, 3, 4
    assert (t.median_ms, t.iqr_ms, t.repeats) == (3.0, 2.0, 5)
    assert t.spread == pytest.approx(2 / 3) and t.noisy and t.speedup is None
    steady = Latency.of([10.0, 10.2, 10.1, 10.3], **FACTS)
    assert steady.median_ms == pytest.approx(10.15) and not steady.noisy


def test_a_noisy_base_makes_the_speedup_noisy() -> None:
    steady = Latency.of([1.0, 1.0, 1.0], **FACTS)
    noisy_base = Latency.of([1.0, 2.0, 3.0, 9.0], **FACTS)
    assert Latency(**{**steady.__dict__, "base": noisy_base}).noisy
    assert Latency(**{**steady.__dict__, "base": steady}).speedup == 1.0


def test_blocks_alternate_their_order_until_budget_and_repeats_are_met() -> None:
    clock = FakeClock()
    budget_s = TARGET_BLOCKS * 2 * MS  # blocks of 2 MS: one call of a, two of b
    timed = time_interleaved(
        [clock.call("a", 2 * MS), clock.call("b", MS)],
        budget_s=budget_s,
        min_repeats=3,
        warmup=1,
        clock=clock,
    )
    (a, a_calls), (b, b_calls) = timed
    assert a == pytest.approx([2e3 * MS] * len(a)) and b == pytest.approx([1e3 * MS] * len(b))
    assert len(a) == len(b) == TARGET_BLOCKS  # 4 MS a round until 2 x budget are timed
    assert (a_calls, b_calls) == (TARGET_BLOCKS, 2 * TARGET_BLOCKS)
    blocks = "".join(clock.log[2:]).replace("bb", "B")  # after the warm-up calls "a", "b"
    assert blocks.startswith("aBBaaBBa")  # A B, B A, A B, ...


def test_a_slow_spell_stretches_a_block_by_one_call_only() -> None:
    clock = FakeClock()
    times = iter([MS / 8] * 5 + [32 * MS] + [MS / 8] * 10_000)  # one call hits a busy machine
    [(samples, _)] = time_interleaved(
        [lambda: setattr(clock, "now", clock.now + next(times))],
        budget_s=TARGET_BLOCKS * MS,
        min_repeats=5,
        warmup=0,
        clock=clock,
    )
    assert max(samples) == pytest.approx(1e3 * (5 * MS / 8 + 32 * MS) / 6)  # the block ends after it
    assert sorted(samples)[len(samples) // 2] == pytest.approx(1e3 * MS / 8)


def test_a_minimum_of_repeats_holds_whatever_the_budget() -> None:
    clock = FakeClock()
    [(samples, calls)] = time_interleaved(
        [clock.call("a", 50 * MS)], budget_s=0.0, min_repeats=7, clock=clock
    )
    assert len(samples) == 7 and calls == 7


def test_speedup_is_the_ratio_of_interleaved_medians() -> None:
    clock = FakeClock()
    t = measure_calls(
        clock.call("pruned", MS),
        base_run=clock.call("base", 3 * MS),
        batch=4,
        device=torch.device("cpu"),
        budget_s=TARGET_BLOCKS * 3 * MS,
        clock=clock,
    )
    assert t.speedup == 3.0 and not t.noisy
    assert t.base is not None and t.base.median_ms == pytest.approx(3e3 * MS) and t.batch == 4
    assert t.threads == torch.get_num_threads() and t.device == "cpu"
    flat = latency_metrics({"latency": t, "sampling": t.base})
    assert flat == pytest.approx(
        {
            "latency_ms": 1e3 * MS,
            "latency_iqr_ms": 0.0,
            "latency_noisy": 0.0,
            "latency_speedup": 3.0,
            "sampling_ms": 3e3 * MS,
            "sampling_iqr_ms": 0.0,
            "sampling_noisy": 0.0,
        },
        abs=1e-9,
    )


def test_threads_that_wait_on_each_other_are_flagged(monkeypatch) -> None:
    """A model that one thread runs 10x faster than two: the steady two-thread figure is contention."""
    clock, threads = FakeClock(), torch.get_num_threads()

    def run() -> None:
        clock.now += MS if torch.get_num_threads() == 1 else 10 * MS

    try:
        torch.set_num_threads(2)
        t = measure_calls(run, batch=1, device=torch.device("cpu"), budget_s=TARGET_BLOCKS * MS, clock=clock)
        given = measure_calls(
            run, batch=1, device=torch.device("cpu"), budget_s=TARGET_BLOCKS * MS, threads=2, clock=clock
        )
        assert torch.get_num_threads() == 2  # given back
    finally:
        torch.set_num_threads(threads)
    assert t.median_ms == pytest.approx(10e3 * MS) and t.iqr_ms == 0.0 and t.threads == 2
    assert t.contended and t.noisy and t.to_dict()["noisy"]
    assert not given.contended  # threads the caller set (an ONNX Runtime session's) are not checked


class Sleepy(nn.Module):
    """A model made slower on purpose: it sleeps before its linear layer."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.seconds)
        return self.fc(x)


def test_a_model_made_slower_is_measured_slower_than_its_base() -> None:
    fast, slow = Sleepy(0.0), Sleepy(0.003).train()
    t = measure_latency(slow, torch.zeros(2, 4), base=fast, budget_s=0.02, min_repeats=3, warmup=1)
    assert t.speedup is not None and t.speedup < 0.5 and t.median_ms >= 3.0
    assert t.batch == 2 and t.base is not None and t.base.median_ms < 1.0
    assert slow.training  # given back in the mode it came in


def record(**latency: object) -> TrialRecord:
    return TrialRecord(
        number=3, state="complete", quality=0.9, flops=500, n_params=10, latency_ms=2.0, feasible=True,
        params={"x": 1}, model_dir=None, **latency,
    )  # fmt: skip


def test_records_keep_the_latency_fields_and_old_records_still_load(tmp_path: Path) -> None:
    new = record(latency_iqr_ms=0.1, speedup=1.5, latency_noisy=True)
    save_records(tmp_path, [new])
    assert load_records(tmp_path) == [new]
    old = {k: v for k, v in new.to_dict().items() if k not in ("latency_iqr_ms", "speedup", "latency_noisy")}
    (tmp_path / TRIALS_FILE).write_text(json.dumps(old) + "\n")
    [loaded] = load_records(tmp_path)
    assert loaded.latency_ms == 2.0 and loaded.speedup is None and loaded.latency_iqr_ms is None
    assert not loaded.latency_noisy


def info(tmp_path: Path) -> SearchInfo:
    return SearchInfo(
        name="s", strategy="magnitude", run_dir=tmp_path, quality_metric="accuracy",
        base={"quality": 0.95, "flops": 1000.0, "n_params": 100.0, "latency_ms": 3.0, "latency_iqr_ms": 0.1},
        max_flops=None, config={}, conventions={},
    )  # fmt: skip


def test_the_front_shows_speedup_beside_the_flops_ratio_and_marks_noise(tmp_path: Path) -> None:
    from rich.console import Console

    trusted = record(latency_iqr_ms=0.05, speedup=1.5)
    noisy = record(latency_iqr_ms=1.0, speedup=0.8, latency_noisy=True)
    noisy.number, noisy.flops, noisy.quality = 4, 400, 0.8
    old = record()
    old.number, old.flops, old.quality = 5, 300, 0.7
    by_column = list(csv.DictReader(io.StringIO(front_csv([trusted, noisy, old], info(tmp_path)))))
    assert [r["speedup"] for r in by_column] == ["1.5", "0.8", ""]
    assert [r["latency_noisy"] for r in by_column] == ["0", "1", "0"]
    assert [r["flops_ratio"] for r in by_column] == ["0.5000", "0.4000", "0.3000"]
    console = Console(width=200, record=True)
    console.print(front_table([trusted, noisy, old], info(tmp_path), 3))
    text = console.export_text()
    assert "speed-up" in text and "IQR ms" in text
    lines = {line.split("│")[1].strip(): line for line in text.splitlines() if line.count("│") > 3}
    assert "1.50" in lines["3"] and "noisy" not in lines["3"]
    assert "0.80 noisy" in lines["4"] and "?" in lines["5"]


def test_onnxruntime_times_the_exported_model_beside_its_base() -> None:
    pytest.importorskip("onnxruntime")
    from automl_prune.onnx_latency import onnxruntime_latency

    wide = nn.Sequential(nn.Linear(16, 256), nn.ReLU(), nn.Linear(256, 4))
    narrow = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))
    t = onnxruntime_latency(narrow, torch.zeros(3, 16), base=wide, budget_s=0.02, min_repeats=3)
    assert t.batch == 3 and t.threads == torch.get_num_threads() and t.base is not None
    assert t.median_ms > 0 and t.speedup is not None and t.speedup > 0


def test_a_missing_onnxruntime_names_the_extra(monkeypatch) -> None:
    from automl_prune.onnx_latency import onnxruntime_latency

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    with pytest.raises(AutomlPruneError) as caught:
        onnxruntime_latency(nn.Linear(2, 2), torch.zeros(1, 2), budget_s=0.01)
    assert "automl-prune[onnx]" in caught.value.fix


def test_evaluate_times_a_saved_model_beside_its_unpruned_architecture(tmp_path: Path) -> None:
    from automl_prune.data.registry import load_dataset
    from automl_prune.evaluation import evaluate_saved
    from automl_prune.models.base import ModelRef
    from automl_prune.models.cifar_resnet import resnet20
    from automl_prune.pruning import save_pruned

    info, meta = load_dataset("digits").info, {"data": "digits", "data_args": {}}
    ref = ModelRef("resnet20", {"width": 16})
    narrow = save_pruned(
        resnet20(width=4, in_channels=1), tmp_path / "narrow", model_ref=ref, info=info, metadata=meta
    )

    def evaluate(base: str) -> dict:
        return evaluate_saved(
            narrow, data=None, split="val", device="cpu", batch_size=256, base=base, latency_budget_s=0.02
        )

    report = evaluate("unpruned")
    timing = report["timings"]["latency"]
    assert timing["base"]["median_ms"] > 0 and report["latency_speedup"] == timing["speedup"]
    assert report["latency_ms"] == timing["median_ms"] and "interleaved" in report["conventions"]["latency"]
    alone = evaluate("none")
    assert "latency_speedup" not in alone and alone["timings"]["latency"]["base"] is None
    assert evaluate(str(narrow))["timings"]["latency"]["base"]["repeats"] >= 5  # another saved model
    with pytest.raises(AutomlPruneError):
        evaluate(str(tmp_path / "no-such-model"))


def test_the_cli_warns_when_a_timing_is_noisy(tmp_path: Path, monkeypatch) -> None:
    from typer.testing import CliRunner

    import automl_prune.latency
    from automl_prune.cli import app
    from automl_prune.data.registry import load_dataset
    from automl_prune.models.base import ModelRef
    from automl_prune.models.cifar_resnet import resnet20
    from automl_prune.pruning import save_pruned

    info, meta = load_dataset("digits").info, {"data": "digits", "data_args": {}}
    ref = ModelRef("resnet20", {"width": 4})
    path = save_pruned(
        resnet20(width=4, in_channels=1), tmp_path / "m", model_ref=ref, info=info, metadata=meta
    )
    monkeypatch.setattr(automl_prune.latency, "NOISY_SPREAD", -1.0)  # any spread is too much
    done = CliRunner().invoke(app, ["evaluate", str(path), "--split", "val", "--latency-budget", "0.01"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["latency_noisy"] == 1.0
    assert "warning: latency is noisy" in done.stderr and "--latency-budget" in done.stderr
