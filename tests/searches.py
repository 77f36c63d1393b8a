"""A small prepared search on digits that strategy tests share (ResNet-20 width 8, 16x16, 3 base epochs)."""

from __future__ import annotations

from pathlib import Path

from automl_prune.search.config import SearchConfig
from automl_prune.search.setup import Prepared, plan_search, prepare_search


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
