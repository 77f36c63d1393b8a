"""The task contract: how a kind of model is called, trained, costed and judged.

The core only ever talks to a :class:`Task`, never to a classifier, a GAN or a UNet directly: the task
gives the example inputs (a tensor, tuple or dict), the training loss, the FLOPs under its stated
convention, the parameter count and the latency. A plugin adds a new kind of vision model by
registering a task. :class:`SingleCallTask` implements the parts that are the same for every model
whose cost is one forward pass (classifiers, image translation).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from automl_prune.data.base import DataSplits
from automl_prune.errors import DataError
from automl_prune.flops import FLOPS_CONVENTION, count_flops, count_params
from automl_prune.latency import SEARCH_BUDGET_S, Latency, measure_latency
from automl_prune.model_io import Inputs, evaluating, to_device
from automl_prune.progress import Progress

SPLITS = ("train", "val", "test")


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Evaluate without gradients, then give the model back in the mode it came in."""
    with evaluating(model), torch.no_grad():
        yield model


def split_dataset(data: DataSplits, split: str) -> Any:
    """The dataset of ``split``, checked to be a known split and not empty."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}", f"use one of {', '.join(SPLITS)}")
    dataset = getattr(data, split)
    if len(dataset) == 0:
        raise DataError(f"the {split} split of {data.info.name!r} is empty", "use a larger dataset")
    return dataset


@runtime_checkable
class Task(Protocol):
    """A kind of model: its quality metric (always maximised), how it is called and costed, its training
    and evaluation, and the epochs, learning rate and batch size that train a base model (``--base-epochs``,
    ``--base-lr`` and ``--batch-size`` override them)."""

    name: str
    quality_metric: str
    base_epochs: int
    base_lr: float
    batch_size: int
    flops_unit: str  # what one FLOPs figure covers, for tables and plots: "forward", "denoising step"
    model_calls: int  # model calls in that unit at the example input (classifier-free guidance: 2)

    def train(
        self,
        model: nn.Module,
        data: DataSplits,
        *,
        epochs: int,
        lr: float,
        batch_size: int,
        device: torch.device,
        seed: int,
        progress: Progress,
        teacher: nn.Module | None = None,
    ) -> nn.Module:
        """Train (or fine-tune) ``model`` in place on ``data.train`` and return it.

        With ``teacher``, add the task's distillation term from the teacher's outputs.
        """
        ...

    def evaluate(
        self, model: nn.Module, data: DataSplits, split: str, *, batch_size: int, device: torch.device
    ) -> dict[str, float]:
        """Metrics of ``model`` on ``split`` ("val" or "test"); must include ``quality_metric``."""
        ...

    def example_input(self, data: DataSplits, batch: int = 1) -> Inputs:
        """Inputs of one model call (a tensor, tuple or dict), for tracing, FLOP counting and latency."""
        ...

    def loss(self, model: nn.Module, batch: Any, data: DataSplits, device: torch.device) -> torch.Tensor:
        """The training loss of ``model`` on one training-loader ``batch``: what Taylor importance
        differentiates."""
        ...

    def flops(self, model: nn.Module, data: DataSplits) -> int:
        """FLOPs of ``model`` under the task's convention: the figure budgets and fronts use."""
        ...

    def cost(self, model: nn.Module, data: DataSplits, flops: int) -> dict[str, float]:
        """Further cost figures reported beside ``flops`` (the model's :meth:`flops`, already measured),
        e.g. a whole sampling run."""
        ...

    def flops_convention(self) -> str:
        """What ``flops`` and ``cost`` count, in words (stored with every result)."""
        ...

    def n_params(self, model: nn.Module) -> int:
        """Parameters of what inference runs (a GAN's generator, not its discriminator)."""
        ...

    def latency(
        self,
        model: nn.Module,
        data: DataSplits,
        device: torch.device,
        *,
        base: nn.Module | None = None,
        budget_s: float = SEARCH_BUDGET_S,
    ) -> dict[str, Latency]:
        """Named timings (:func:`~automl_prune.latency.measure_latency`): ``latency`` (one call at
        batch 1) first, then any others the task reports. With ``base``, each timing that states a
        speed-up times ``base`` interleaved with ``model``; ``budget_s``: timed seconds per model."""
        ...

    def report(
        self, model: nn.Module, data: DataSplits, device: torch.device, progress: Progress
    ) -> dict[str, float]:
        """Quality figures too costly for every :meth:`evaluate`, measured once per trial and for the base
        model and reported beside the selection metric, never used for selection (diffusion: Frechet
        distances of samples on val and test); may be {}."""
        ...

    def report_convention(self, data: DataSplits) -> str:
        """What :meth:`report` measures on ``data``, in words (e.g. which encoder, how many samples)."""
        ...

    def figures(
        self, model: nn.Module, base: nn.Module, data: DataSplits, folder: Path, device: torch.device
    ) -> list[Path]:
        """Figures of a pruned ``model`` beside its ``base`` for a trial (e.g. a sample grid); may be []."""
        ...


class SingleCallTask:
    """The contract's parts for models whose cost is one forward pass on one input tensor at batch 1."""

    flops_unit = "forward"
    model_calls = 1
    batch_size: int

    def example_input(self, data: DataSplits, batch: int = 1) -> Inputs:
        return torch.zeros(batch, *data.info.input_shape)

    def flops(self, model: nn.Module, data: DataSplits) -> int:
        """``model_calls`` x fvcore's count of one call on the example input at batch 1."""
        device = next(model.parameters()).device
        return self.model_calls * count_flops(model, to_device(self.example_input(data, 1), device))

    def cost(self, model: nn.Module, data: DataSplits, flops: int) -> dict[str, float]:
        return {}

    def flops_convention(self) -> str:
        return FLOPS_CONVENTION

    def n_params(self, model: nn.Module) -> int:
        return count_params(model)

    def latency(
        self,
        model: nn.Module,
        data: DataSplits,
        device: torch.device,
        *,
        base: nn.Module | None = None,
        budget_s: float = SEARCH_BUDGET_S,
    ) -> dict[str, Latency]:
        one = to_device(self.example_input(data, 1), device)
        return {"latency": measure_latency(model, one, base=base, budget_s=budget_s)}

    def report(
        self, model: nn.Module, data: DataSplits, device: torch.device, progress: Progress
    ) -> dict[str, float]:
        return {}

    def report_convention(self, data: DataSplits) -> str:
        return ""

    def figures(
        self, model: nn.Module, base: nn.Module, data: DataSplits, folder: Path, device: torch.device
    ) -> list[Path]:
        return []
