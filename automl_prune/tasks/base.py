"""The task contract: how a kind of model is trained and judged.

The core only ever talks to a :class:`Task`, never to a classifier or a GAN directly, so a plugin adds
a new kind of vision model (image translation, diffusion, text-to-image) by registering a task.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import nn

from automl_prune.data.base import DataSplits
from automl_prune.progress import Progress


@runtime_checkable
class Task(Protocol):
    """A kind of model: its quality metric (always maximised), training, evaluation, and the epochs and
    learning rate that train a base model and its default batch size (``--base-epochs``, ``--base-lr`` and
    ``--batch-size`` override them)."""

    name: str
    quality_metric: str
    base_epochs: int  # the recipe a base model is trained with when the user gives no weights
    base_lr: float
    batch_size: int  # default batch of training, fine-tuning and evaluation

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

    def example_input(self, data: DataSplits, batch: int = 1) -> torch.Tensor:
        """A zero input of the task's shape, for tracing, FLOP counting and latency."""
        ...
