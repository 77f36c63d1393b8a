"""Latency by one convention, stable enough to compare models by.

A plain median of 20 forwards swung from 706 to 8 ms between runs of one model on a shared CPU, and a
base timed minutes before its pruned copy made pruned models look slower. So: calls are timed in blocks
(a tiny model's calls are grouped, so that one sample is not the timer's or the scheduler's noise) until
both a time budget and a least number of samples are reached; a record keeps the median and the
interquartile range of the samples with the batch, device and threads they were taken at, and says when
the spread is too large to trust. A speed-up is only ever the ratio of two medians timed in the same
process, the base's and the candidate's blocks alternating, so a slow spell of the machine hits both.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import nn

from automl_prune.model_io import Inputs, call, evaluating, positional

NOISY_SPREAD = 0.1  # IQR / median above this is "noisy" (torch.utils.benchmark's warning threshold)
SEARCH_BUDGET_S = 0.05  # timed seconds per model and timing in a search trial: small, trials stay quick
EVALUATE_BUDGET_S = 1.0  # timed seconds per model in `evaluate`
MIN_REPEATS = 5  # samples (blocks) per model at least, whatever the budget
WARMUP = 3  # untimed calls per model first
TARGET_BLOCKS = 20  # calls are grouped in blocks of budget / TARGET_BLOCKS seconds
MAX_REPEATS = 10_000  # stops for calls that take no measurable time (fake clocks)
MAX_BLOCK_CALLS = 10_000
CONTENDED_RATIO = 1.5  # one thread this much faster than torch's threads: they are fighting for the CPU

Clock = Callable[[], float]


@dataclass(frozen=True)
class Latency:
    """One model's timing: median and interquartile range in ms of ``repeats`` samples (each the mean
    call time of a block of calls; ``calls`` in all), at ``batch`` on ``device`` with ``threads`` CPU
    threads (None on a GPU). ``base`` is the base model timed interleaved with this one, when a speed-up
    was asked for. ``contended``: one thread ran the model much faster than ``threads`` did, so the
    figure measures threads waiting on a shared CPU, not the model."""

    median_ms: float
    iqr_ms: float
    repeats: int
    batch: int
    device: str
    threads: int | None
    calls: int = 1
    base: Latency | None = None
    contended: bool = False

    @classmethod
    def of(cls, samples_ms: Sequence[float], **facts: Any) -> Latency:
        """The record of ``samples_ms`` (one per block); ``facts`` are the other fields."""
        if len(samples_ms) < 2:
            return cls(median_ms=float(samples_ms[0]), iqr_ms=0.0, repeats=len(samples_ms), **facts)
        q1, median, q3 = statistics.quantiles(samples_ms, n=4, method="inclusive")
        return cls(median_ms=median, iqr_ms=q3 - q1, repeats=len(samples_ms), **facts)

    @property
    def spread(self) -> float:
        """IQR / median: the relative spread that :attr:`noisy` judges."""
        return self.iqr_ms / self.median_ms if self.median_ms > 0 else math.inf

    @property
    def noisy(self) -> bool:
        """Whether this timing (or the base's, for a speed-up) spreads more than :data:`NOISY_SPREAD` or
        is ``contended``."""
        return self.contended or self.spread > NOISY_SPREAD or (self.base is not None and self.base.noisy)

    @property
    def speedup(self) -> float | None:
        """Base median / this median, from the interleaved timing (None: no base was timed)."""
        return None if self.base is None else self.base.median_ms / self.median_ms

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "noisy": self.noisy, "speedup": self.speedup}


def time_interleaved(
    runs: Sequence[Callable[[], object]],
    *,
    budget_s: float,
    min_repeats: int = MIN_REPEATS,
    warmup: int = WARMUP,
    sync: Callable[[], None] | None = None,
    clock: Clock = time.perf_counter,
) -> list[tuple[list[float], int]]:
    """Samples in ms and the number of calls timed, for each of ``runs``. A sample is the mean call
    time of one block: calls until ``budget_s / TARGET_BLOCKS`` seconds have passed (at least one), so
    a tiny model's sample is not the timer's noise and a slow spell cannot stretch a block by more than
    one call. After ``warmup`` untimed calls each, the runs are timed in alternating blocks, the order
    reversed every round (A B, B A, ...), until each has ``min_repeats`` samples and ``budget_s``
    seconds per run have been timed. ``sync`` waits for queued device work (CUDA) before the clock is
    read."""
    wait = sync or (lambda: None)
    per_block = budget_s / TARGET_BLOCKS

    def block(run: Callable[[], object]) -> tuple[float, int]:
        wait()
        start, calls = clock(), 0
        while True:
            run()
            wait()
            calls += 1
            elapsed = clock() - start
            if elapsed >= per_block or calls >= MAX_BLOCK_CALLS:
                return elapsed, calls

    for _ in range(warmup):
        for run in runs:
            run()
    samples: list[list[float]] = [[] for _ in runs]
    calls = [0] * len(runs)
    spent, order = 0.0, list(range(len(runs)))
    while True:
        for i in order:
            seconds, n = block(runs[i])
            spent += seconds
            calls[i] += n
            samples[i].append(seconds * 1e3 / n)
        fewest = min(len(s) for s in samples)
        if fewest >= MAX_REPEATS or (fewest >= min_repeats and spent >= budget_s * len(runs)):
            return list(zip(samples, calls, strict=True))
        order.reverse()


def measure_calls(
    run: Callable[[], object],
    *,
    base_run: Callable[[], object] | None = None,
    batch: int,
    device: torch.device,
    budget_s: float,
    min_repeats: int = MIN_REPEATS,
    warmup: int = WARMUP,
    threads: int | None = None,
    clock: Clock = time.perf_counter,
) -> Latency:
    """The :class:`Latency` of ``run()`` (no grad); with ``base_run``, the two are timed interleaved and
    the record carries the base's (``speedup``). ``threads``: the threads the calls use (default:
    torch's on a CPU, checked by :func:`_one_thread_is_faster`; None on a GPU)."""
    runs = [run] if base_run is None else [base_run, run]
    cuda = device.type == "cuda"
    on_torch_threads = threads is None and not cuda
    if on_torch_threads:
        threads = torch.get_num_threads()
    with torch.inference_mode():
        timed = time_interleaved(
            runs,
            budget_s=budget_s,
            min_repeats=min_repeats,
            warmup=warmup,
            sync=torch.cuda.synchronize if cuda else None,
            clock=clock,
        )
        facts = {"batch": batch, "device": str(device), "threads": threads}
        records = [Latency.of(samples, calls=calls, **facts) for samples, calls in timed]
        contended = (
            on_torch_threads
            and threads > 1
            and _one_thread_is_faster(run, records[-1].median_ms, budget_s, clock)
        )
    main = records[0] if base_run is None else replace(records[1], base=records[0])
    return replace(main, contended=contended)


def _one_thread_is_faster(run: Callable[[], object], median_ms: float, budget_s: float, clock: Clock) -> bool:
    """Whether ``run`` on one CPU thread takes under 1 / :data:`CONTENDED_RATIO` of ``median_ms``, its
    time on torch's threads. On a CPU shared with other processes, torch's threads wait for each other
    at every operator (a descheduled thread holds up the rest) and a 0.6 ms model reads 650 ms with a
    small spread: steady, so only this comparison shows it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        [(samples, _)] = time_interleaved([run], budget_s=budget_s / 4, min_repeats=3, warmup=1, clock=clock)
    finally:
        torch.set_num_threads(threads)
    return statistics.median(samples) * CONTENDED_RATIO < median_ms


def batch_of(inputs: Inputs) -> int:
    """The batch size of a model call's inputs: dimension 0 of the first input tensor."""
    first = positional(inputs)[0]
    return first.shape[0] if first.dim() else 1


def measure_latency(
    model: nn.Module, example_input: Inputs, *, base: nn.Module | None = None, **timing: Any
) -> Latency:
    """The :class:`Latency` of one call of ``model`` on ``example_input`` (eval mode, no grad), with
    ``base`` timed interleaved on the same input when given. ``timing``: :func:`measure_calls`'s
    budget, repeats and warm-up."""
    with ExitStack() as stack:
        for m in (model, base):
            if m is not None:
                stack.enter_context(evaluating(m))
        return measure_calls(
            lambda: call(model, example_input),
            base_run=None if base is None else (lambda: call(base, example_input)),
            batch=batch_of(example_input),
            device=positional(example_input)[0].device,
            **timing,
        )


def latency_metrics(timings: Mapping[str, Latency]) -> dict[str, float]:
    """Flat figures of named timings: ``NAME_ms`` (the median), ``NAME_iqr_ms``, ``NAME_noisy`` (1 or
    0) and, where a base was timed beside it, ``NAME_speedup``."""
    out: dict[str, float] = {}
    for name, t in timings.items():
        out |= {f"{name}_ms": t.median_ms, f"{name}_iqr_ms": t.iqr_ms, f"{name}_noisy": float(t.noisy)}
        if t.speedup is not None:
            out[f"{name}_speedup"] = t.speedup
    return out


def latency_convention(device: torch.device, budget_s: float | None = None, batch: int = 1) -> str:
    """How latency figures were taken, in words (stored with every result); ``budget_s`` None: a
    search's default, :data:`SEARCH_BUDGET_S`."""
    budget_s = SEARCH_BUDGET_S if budget_s is None else budget_s
    threads = torch.get_num_threads() if device.type == "cpu" else "n/a"
    return (
        f"median and IQR of per-call times in blocks of calls (at least {MIN_REPEATS} blocks and "
        f"{budget_s:g} s timed per model, after {WARMUP} warm-up calls), batch {batch}, device {device}, "
        f"threads {threads}; speed-up = base median / model median, the two timed interleaved in one "
        f"process; noisy when IQR / median > {NOISY_SPREAD:g}, or when one thread runs the model "
        f"{CONTENDED_RATIO:g}x faster than torch's threads (they contend for a shared CPU)"
    )
