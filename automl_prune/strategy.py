"""The strategy contract: ``prepare`` once per search, ``run`` once per trial.

A strategy is a class registered through the ``register_strategies`` hook. The orchestrator builds a
:class:`Context` (base model, data, task, device, seed, run directory, progress), calls
``prepare(context)`` (its result is cached on disk under a content key, so a second search on the
same base model reuses it), then calls ``run(context, params, artifacts)`` for every trial with the
parameters the sampler drew from the strategy's search space. ``run`` returns a :class:`Candidate`:
the physically pruned model and its quality on the validation split. The orchestrator measures FLOPs,
parameters and latency itself, with one convention for every strategy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.data import DataLoader

from automl_prune.data.base import DataSplits
from automl_prune.model_io import Inputs, to_device
from automl_prune.models.base import ModelRef
from automl_prune.progress import Progress
from automl_prune.tasks.base import Task


@dataclass
class Context:
    """Everything a strategy may use. ``model`` is the trained base model: copy it before changing it."""

    model: nn.Module
    model_ref: ModelRef
    data: DataSplits
    task: Task
    device: torch.device
    seed: int
    run_dir: Path
    cache_dir: Path
    progress: Progress
    base_flops: int
    max_flops: float | None = None
    batch_size: int = 64

    def example_input(self, batch: int = 1) -> Inputs:
        """The task's example inputs of one model call (a tensor, tuple or dict) on the device."""
        return to_device(self.task.example_input(self.data, batch), self.device)

    def loader(self, split: str, *, shuffle: bool = False, batch_size: int | None = None) -> DataLoader:
        dataset = getattr(self.data, split)
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            dataset, batch_size=batch_size or self.batch_size, shuffle=shuffle, generator=generator
        )

    def first_batch(self, split: str, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``n`` items of ``split`` (default: one batch), unshuffled, on the device: the same
        inputs on every call, for checks, figures and fixed evaluation sets."""
        x, y = next(iter(self.loader(split, batch_size=n)))
        return x.to(self.device), y.to(self.device)

    def flops(self, model: nn.Module) -> int:
        """FLOPs of ``model`` by the task's convention (fvcore, batch 1; per denoising step for diffusion)."""
        return self.task.flops(model.to(self.device), self.data)

    def evaluate(self, model: nn.Module, split: str = "val") -> dict[str, float]:
        return self.task.evaluate(model, self.data, split, batch_size=self.batch_size, device=self.device)

    def finetune(self, model: nn.Module, *, epochs: int, lr: float, distill: bool = False) -> nn.Module:
        """Fine-tune with the task's own recipe: the same budget for every strategy that is compared.

        With ``distill``, the base model is the teacher.
        """
        return self.task.train(
            model,
            self.data,
            epochs=epochs,
            lr=lr,
            batch_size=self.batch_size,
            device=self.device,
            seed=self.seed,
            progress=self.progress,
            teacher=self.model if distill else None,
        )

    def scores(self, model: nn.Module) -> tuple[float, dict[str, float]]:
        """Validation quality (what selection uses) and ``val_*``/``test_*`` metrics (test: reported only)."""
        val, test = self.evaluate(model, "val"), self.evaluate(model, "test")
        metrics = {**{f"val_{k}": v for k, v in val.items()}, **{f"test_{k}": v for k, v in test.items()}}
        return val[self.task.quality_metric], metrics


@dataclass
class Candidate:
    """One trial's result: a physically pruned model and its measurements.

    Strategies fill ``model``, ``quality`` (the task's quality metric on the validation split) and
    ``target_flops``; the orchestrator fills ``flops``, ``params`` and ``latency_ms``. ``spec`` holds
    architecture facts to store with the model (e.g. kernel sizes); ``figures`` are image files to log.
    """

    model: nn.Module
    quality: float
    target_flops: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    flops: int | None = None
    params: int | None = None
    latency_ms: float | None = None
    spec: dict[str, Any] = field(default_factory=dict)
    figures: list[Path] = field(default_factory=list)


class Strategy:
    """Base class of pruning strategies. Subclass it and register it with ``register_strategies``.

    Class attributes:
        name: what users pass to ``--strategy``.
        tasks: the task names it can prune (``classification``, ``image-translation``, ...).
        space: path of its default search-space YAML (``space_for`` finds a task-specific one).
        version: bump it when ``prepare`` changes, so cached artifacts are not reused.
    """

    name: ClassVar[str]
    tasks: ClassVar[tuple[str, ...]] = ("classification",)
    space: ClassVar[Path]
    version: ClassVar[str] = "1"
    description: ClassVar[str] = ""

    def space_for(self, task: str) -> Path:
        """The default search space for pruning a ``task`` model: ``NAME.TASK.yaml`` beside ``space``
        when the strategy ships one (a diffusion UNet fine-tunes with Adam at other learning rates than a
        classifier with SGD), else ``space``."""
        specific = self.space.with_name(f"{self.space.stem}.{task}{self.space.suffix}")
        return specific if specific.is_file() else self.space

    def prepare_key(self, context: Context) -> dict[str, Any]:
        """Settings besides the base model and data that change what ``prepare`` computes."""
        return {}

    def prepare(self, context: Context) -> dict[str, Any]:
        """Work shared by all trials (an explainer, a similarity matrix). Must be torch.save-able."""
        return {}

    def run(self, context: Context, params: dict[str, Any], artifacts: dict[str, Any]) -> Candidate:
        """One trial: prune ``context.model`` as ``params`` say, fine-tune, and measure quality."""
        raise NotImplementedError

    def min_flops(self, context: Context, artifacts: dict[str, Any]) -> float | None:
        """The fewest FLOPs this strategy can reach on ``context.model`` (None if unknown)."""
        return None
