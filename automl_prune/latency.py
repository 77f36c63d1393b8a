"""Latency by one convention: median of repeated timed forwards after warm-up, at a stated batch."""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn


def measure_latency_ms(
    model: nn.Module, example_input: torch.Tensor, *, repeats: int = 20, warmup: int = 5
) -> float:
    """Median wall time of ``model(example_input)`` in milliseconds (eval mode, no grad)."""
    was_training = model.training
    model.eval()
    sync = torch.cuda.synchronize if example_input.is_cuda else (lambda: None)
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            sync()
            start = time.perf_counter()
            model(example_input)
            sync()
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1e3)
    model.train(was_training)
    return statistics.median(times)


def latency_convention(device: torch.device, batch: int = 1, repeats: int = 20) -> str:
    threads = torch.get_num_threads() if device.type == "cpu" else "n/a"
    return f"median of {repeats} forwards after 5 warm-up, batch {batch}, device {device}, threads {threads}"
