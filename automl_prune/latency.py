"""Latency by one convention: median of repeated timed forwards after warm-up, at a stated batch."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from automl_prune.model_io import Inputs, call, evaluating, positional


def measure_latency_ms(
    model: nn.Module, example_input: Inputs, *, repeats: int = 20, warmup: int = 5
) -> float:
    """Median wall time of one call of ``model`` on ``example_input`` in milliseconds (eval mode, no grad)."""
    cuda = any(t.is_cuda for t in positional(example_input))
    with evaluating(model):
        return median_ms(lambda: call(model, example_input), repeats=repeats, warmup=warmup, cuda=cuda)


def median_ms(run: Callable[[], object], *, repeats: int, warmup: int, cuda: bool = False) -> float:
    """Median wall time of ``run()`` in milliseconds, after ``warmup`` untimed calls (no grad)."""
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            sync()
            start = time.perf_counter()
            run()
            sync()
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def latency_convention(device: torch.device, batch: int = 1, repeats: int = 20) -> str:
    threads = torch.get_num_threads() if device.type == "cpu" else "n/a"
    return f"median of {repeats} forwards after 5 warm-up, batch {batch}, device {device}, threads {threads}"
