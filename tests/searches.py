"""What strategy tests share: a small prepared search on digits (ResNet-20 width 8, 16x16, 3 base epochs),
and a trial Context around a model the test built itself."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from automl_prune.data.base import DataSplits
from automl_prune.models.base import ModelRef
from automl_prune.progress import Progress
from automl_prune.search.config import SearchConfig
from automl_prune.search.setup import Prepared, plan_search, prepare_search
from automl_prune.strategy import Context
from automl_prune.tasks.base import Task


def small_search(out: Path, strategy: str, max_flops: str = "0.6") -> Prepared:
    config = SearchConfig(
        strategy=strategy,
        model="resnet20",
        model_args={"width": 8},
        data="digits",
        out=str(out),
        max_flops=max_flops,
        base_epochs=3,
        base_lr=0.1,
        quiet=True,
    )
    return prepare_search(plan_search(config))


def trial_context(
    model: nn.Module,
    model_ref: ModelRef,
    data: DataSplits,
    task: Task,
    out: Path,
    *,
    base_flops: int | None = None,
) -> Context:
    """The Context a search would hand a trial (CPU, seed 0, quiet, budget ``target_flops_ratio``), for
    models built in the test rather than by :func:`plan_search`; ``base_flops`` defaults to the task's
    count."""
    return Context(
        model=model,
        model_ref=model_ref,
        data=data,
        task=task,
        device=torch.device("cpu"),
        seed=0,
        run_dir=out,
        cache_dir=out,
        progress=Progress(quiet=True),
        base_flops=task.flops(model, data) if base_flops is None else base_flops,
        budget_param="target_flops_ratio",
    )
