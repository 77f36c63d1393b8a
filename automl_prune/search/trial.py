"""One trial, identical on every backend: run the strategy, measure, save the pruned model.

The trial's latency is timed interleaved with the base model (the context's), so its speed-up is a
ratio of medians taken side by side in this process."""

from __future__ import annotations

import math
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from automl_prune.errors import AutomlPruneError, TrainingDivergedError
from automl_prune.io import atomic_write_text
from automl_prune.latency import latency_metrics
from automl_prune.pruning.persistence import save_pruned
from automl_prune.search.records import TrialRecord
from automl_prune.search.setup import Prepared
from automl_prune.strategy import Candidate


def divergence(model: torch.nn.Module, metrics: dict[str, Any]) -> str | None:
    """Why a trained ``model`` has diverged (None: it has not): a NaN or infinite ``val_*``/``test_*``
    score (e.g. the loss), or NaN or infinite weights or buffers."""
    bad = [
        f"{k} = {v}" for k, v in sorted(metrics.items()) if k.startswith(("val_", "test_")) and _nonfinite(v)
    ]
    if bad:
        return ", ".join(bad)
    tensors = [t for t in model.state_dict().values() if t.is_floating_point()]
    if n := sum(int((~torch.isfinite(t)).sum()) for t in tensors):
        return f"{n} of its weights are NaN or infinite"
    return None


def _nonfinite(value: Any) -> bool:
    try:
        return not math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def trial_dir(run_dir: Path, number: int) -> Path:
    return run_dir / "trials" / f"{number:04d}"


def run_trial(
    prepared: Prepared,
    params: dict[str, Any],
    number: int,
    out: Path | None = None,
    *,
    measure: bool = True,
) -> TrialRecord:
    """Run trial ``number`` with ``params``; a failing, NaN or diverged trial (:func:`divergence`)
    comes back as state "failed", so it is never on a front, registered or champion.

    The pruned model is saved in ``out/model`` (default: the run directory's ``trials/NNNN``).
    ``measure=False`` keeps only what the sampler sees (quality, FLOPs, feasibility, the strategy's
    metrics): no latency, task report, figures or saved model, for studies of the search itself.
    """
    plan, context = prepared.plan, prepared.context
    out = out or trial_dir(context.run_dir, number)
    start = time.perf_counter()
    torch.manual_seed(context.seed + number)
    try:
        artifacts = prepared.artifacts_for(params)
        candidate = plan.strategy.run(context, dict(params), artifacts)
        if not math.isfinite(candidate.quality):
            raise AutomlPruneError(f"trial {number} produced a non-finite quality ({candidate.quality})")
        model = candidate.model.eval()
        if why := divergence(model, candidate.metrics):
            raise TrainingDivergedError(
                f"trial {number} diverged: {why}",
                "lower the learning rate (the space's lr range or --set lr=...)",
            )
        task = context.task
        candidate.flops = context.flops(model)
        candidate.params = task.n_params(model)
        if not measure:
            return _record(prepared, params, number, candidate, start)
        timings = task.latency(
            model, context.data, context.device, base=context.model, budget_s=context.latency_budget_s
        )
        latency = timings.pop("latency")
        candidate.latency_ms = latency.median_ms
        candidate.metrics.update(task.cost(model, context.data, candidate.flops) | latency_metrics(timings))
        candidate.metrics.update(task.report(model, context.data, context.device, context.progress))
        candidate.figures += task.figures(
            model, context.model, context.data, Path(context.run_dir) / "figures", context.device
        )
        model_dir = save_pruned(
            model.cpu(),
            out / "model",
            model_ref=context.model_ref,
            info=context.data.info,
            metadata={
                "strategy": plan.strategy.name,
                "params": params,
                "trial": number,
                "data": plan.config.data,
                "data_args": plan.config.data_args,
                "figures": [Path(f).name for f in candidate.figures],  # in the run's figures/
                **candidate.spec,
            },
        )
    except Exception as exc:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "error.txt", traceback.format_exc())
        message = str(exc) if isinstance(exc, AutomlPruneError) else f"{type(exc).__name__}: {exc}"
        return TrialRecord(
            number=number,
            state="failed",
            params=dict(params),
            error=message,
            wall_time_s=time.perf_counter() - start,
        )
    return _record(
        prepared,
        params,
        number,
        candidate,
        start,
        latency_ms=candidate.latency_ms,
        latency_iqr_ms=latency.iqr_ms,
        speedup=latency.speedup,
        latency_noisy=latency.noisy,
        model_dir=str(model_dir),
        figures=[str(f) for f in candidate.figures],
    )


def _record(
    prepared: Prepared,
    params: dict[str, Any],
    number: int,
    candidate: Candidate,
    start: float,
    **measured: Any,
) -> TrialRecord:
    """The record of a complete trial: its objectives and metrics, plus the ``measured`` fields."""
    max_flops = prepared.plan.max_flops
    return TrialRecord(
        number=number,
        state="complete",
        params=dict(params),
        quality=float(candidate.quality),
        flops=candidate.flops,
        n_params=candidate.params,
        target_flops=candidate.target_flops,
        feasible=max_flops is None or candidate.flops <= max_flops,
        metrics={k: float(v) for k, v in candidate.metrics.items()},
        wall_time_s=time.perf_counter() - start,
        **measured,
    )
