"""Does a FLOPs cut make a torchvision classifier faster? Latency speed-up beside the FLOPs ratio.

ResNet-18, ResNet-50 and MobileNetV2 (torchvision, ``weights=None``, 1000 classes: nothing is
downloaded, and latency does not depend on the weights' values) at 224x224 are pruned physically to 50%
and 25% of their fvcore FLOPs by L1 channel magnitude, ranked globally, with the project's toolbox (the
magnitude strategy's selection, without fine-tuning: it does not change the architecture). Each pruned
model is timed against its base interleaved in this process (:mod:`automl_prune.latency`: blocks of
calls alternating until a time budget and a least number of blocks are reached), at batch 1 and 32, in
eager PyTorch and in ONNX Runtime (the exported file, dynamic batch axis), with the same CPU threads.
The speed-up is the ratio of the two medians; ``noisy`` marks an interquartile range above 10% of a
median.

Each target is pruned twice: channel counts as the selection falls (``channel_multiple`` 1) and kept to
multiples of 8 (:func:`automl_prune.pruning.aligned_units`), which ONNX Runtime's vectorised kernels need.

    python benchmarks/latency_torchvision.py    # about 20 minutes on 1 CPU thread
"""

from __future__ import annotations

import argparse
import csv
import platform
import tempfile
import time
from pathlib import Path

import torch
import torch_pruning as tp
import torchvision
from torch import nn

from automl_prune.flops import count_flops, count_params
from automl_prune.latency import Latency, measure_calls, measure_latency
from automl_prune.onnx_latency import onnxruntime_session, session_call
from automl_prune.pruning import GatedFlops, aligned_units, analyze, keep_for_target, slice_model

HERE = Path(__file__).parent
MODELS = ("resnet18", "resnet50", "mobilenet_v2")
TARGETS = (0.5, 0.25)
COLUMNS = [
    "model",
    "target",
    "channel_multiple",
    "flops_ratio",
    "params_ratio",
    "batch",
    "runtime",
    "threads",
    "base_median_ms",
    "base_iqr_ms",
    "median_ms",
    "iqr_ms",
    "speedup",
    "noisy",
    "repeats",
]


def pruned_copies(
    model: nn.Module, example: torch.Tensor, multiples: list[int]
) -> dict[tuple[float, int], nn.Module]:
    """``model`` pruned to each of :data:`TARGETS` times its FLOPs by global L1 magnitude, keeping
    channel counts that are multiples of each of ``multiples`` (1: any count)."""
    analysis = analyze(model, example)
    scores = analysis.importance(tp.importance.GroupMagnitudeImportance(p=1, normalizer=None))
    flops = GatedFlops(model, analysis, example)
    base = count_flops(model, example)
    out = {}
    for target in TARGETS:
        for multiple in multiples:
            units = aligned_units(analysis, multiple)
            keep = keep_for_target(scores, units, lambda k: float(flops(k)), target * base, "global")
            out[target, multiple] = slice_model(model, example, keep, analysis).eval()
    return out


def row(name: str, variant: tuple[float, int], ratios: tuple[float, float], runtime: str, t: Latency) -> dict:
    assert t.base is not None
    return {
        "model": name,
        "target": variant[0],
        "channel_multiple": variant[1],
        "flops_ratio": ratios[0],
        "params_ratio": ratios[1],
        "batch": t.batch,
        "runtime": runtime,
        "threads": t.threads,
        "base_median_ms": t.base.median_ms,
        "base_iqr_ms": t.base.iqr_ms,
        "median_ms": t.median_ms,
        "iqr_ms": t.iqr_ms,
        "speedup": t.speedup,
        "noisy": int(t.noisy),
        "repeats": t.repeats,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--channel-multiples", default="1,8", help="kept channel counts' multiples")
    parser.add_argument("--budget", type=float, default=4.0, help="timed seconds per model at batch 1")
    parser.add_argument("--budget-large", type=float, default=8.0, help="the same at larger batches")
    parser.add_argument("--min-repeats", type=int, default=5, help="timed blocks per model at least")
    parser.add_argument(
        "--threads", type=int, default=1, help="CPU threads (1: steadiest on a shared machine)"
    )
    parser.add_argument("--out", type=Path, default=HERE / "results" / "latency_torchvision.csv")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    print(f"# {platform.machine()}, torch {torch.__version__}, threads {args.threads}", flush=True)
    start = time.perf_counter()
    with args.out.open("w", newline="") as f, tempfile.TemporaryDirectory() as tmp:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for name in args.models.split(","):
            torch.manual_seed(0)
            base = getattr(torchvision.models, name)(weights=None, num_classes=1000).eval()
            one = torch.randn(1, 3, 224, 224)
            pruned = pruned_copies(base, one, [int(m) for m in args.channel_multiples.split(",")])
            sessions = {
                key: onnxruntime_session(m, one, Path(tmp) / f"{name}-{i}")
                for i, (key, m) in enumerate([("base", base), *pruned.items()])
            }
            for batch in (int(b) for b in args.batches.split(",")):
                x = torch.randn(batch, 3, 224, 224)
                timing = {
                    "budget_s": args.budget if batch == 1 else args.budget_large,
                    "min_repeats": args.min_repeats,
                    "warmup": 3 if batch == 1 else 2,
                }
                for variant, model in pruned.items():
                    ratios = (
                        count_flops(model, one) / count_flops(base, one),
                        count_params(model) / count_params(base),
                    )
                    eager = measure_latency(model, x, base=base, **timing)
                    ort = measure_calls(
                        session_call(sessions[variant], x),
                        base_run=session_call(sessions["base"], x),
                        batch=batch,
                        device=torch.device("cpu"),
                        threads=args.threads,
                        **timing,
                    )
                    for runtime, t in (("eager", eager), ("onnxruntime", ort)):
                        r = row(name, variant, ratios, runtime, t)
                        writer.writerow({k: f"{v:.4g}" if isinstance(v, float) else v for k, v in r.items()})
                        f.flush()
                        print(
                            f"{name} {variant} b{batch} {runtime}: flops x{ratios[0]:.3f} "
                            f"base {t.base.median_ms:.2f}±{t.base.iqr_ms:.2f} "
                            f"pruned {t.median_ms:.2f}±{t.iqr_ms:.2f} ms speed-up {t.speedup:.2f}"
                            f"{' noisy' if t.noisy else ''} ({time.perf_counter() - start:.0f} s)",
                            flush=True,
                        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
