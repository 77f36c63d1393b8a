"""The settings of one search, as given on the command line or in Python; saved in search.json."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from automl_prune.errors import AutomlPruneError
from automl_prune.search.validate import check_count, check_rate

BACKENDS = ("optuna", "ray")
SAMPLERS = ("nsga2", "tpe", "random")


@dataclass
class SearchConfig:
    """Everything that defines a search. ``max_flops`` is a ratio (``0.5``) or absolute (``20M``)."""

    strategy: str
    model: str
    data: str
    out: str
    trials: int = 8
    max_flops: str | None = None
    weights: str | None = None
    model_args: dict[str, Any] = field(default_factory=dict)
    data_args: dict[str, Any] = field(default_factory=dict)
    space: str | None = None
    overrides: list[str] = field(default_factory=list)
    backend: str = "optuna"
    sampler: str = "tpe"  # ahead of nsga2 and random on both measured spaces (benchmarks/README.md)
    workers: int = 1
    address: str | None = None
    seed: int = 0
    device: str = "cpu"
    base_epochs: int | None = None  # None: the task's own recipe (Task.base_epochs / base_lr)
    base_lr: float | None = None
    batch_size: int | None = None
    latency_budget_s: float | None = None  # timed s per model in trial latency (None: SEARCH_BUDGET_S)
    tracking_uri: str | None = None
    registered_model: str | None = None
    compare: list[str] = field(default_factory=list)
    name: str | None = None
    quiet: bool = False

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise AutomlPruneError(f"unknown backend {self.backend!r}", f"use one of {', '.join(BACKENDS)}")
        if self.sampler not in SAMPLERS:
            raise AutomlPruneError(f"unknown sampler {self.sampler!r}", f"use one of {', '.join(SAMPLERS)}")
        if self.trials < 1:
            raise AutomlPruneError(
                f"--trials must be at least 1, got {self.trials}", "give --trials 1 or more"
            )
        if self.workers < 1:
            raise AutomlPruneError(
                f"--workers must be at least 1, got {self.workers}", "give --workers 1 or more"
            )
        check_count(self.base_epochs, "--base-epochs", 0)
        check_count(self.batch_size, "--batch-size", 1)
        check_rate(self.base_lr, "--base-lr")
        check_rate(self.latency_budget_s, "latency_budget_s")

    @property
    def run_dir(self) -> Path:
        return Path(self.out)

    @property
    def search_name(self) -> str:
        return self.name or self.run_dir.resolve().name

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SearchConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def parse_key_values(items: list[str] | None, option: str) -> dict[str, Any]:
    """``["width=8", "size=16"]`` -> ``{"width": 8, "size": 16}`` (numbers and booleans typed by YAML)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise AutomlPruneError(f"cannot read {option} {item!r}", f"write {option} key=value")
        out[key.strip()] = yaml.safe_load(value)
    return out
