"""What every dataset factory returns: three splits and the facts a model factory needs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch.utils.data import Dataset


@dataclass(frozen=True)
class DataInfo:
    """Shape facts about a dataset, enough to build a model for it.

    ``image_size`` is (H, W) of the tensors the loaders yield; ``num_classes`` is 0 for tasks
    without classes (image translation, unconditional diffusion).
    """

    name: str
    task: str
    in_channels: int
    image_size: tuple[int, int]
    num_classes: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.in_channels, *self.image_size)


@dataclass
class DataSplits:
    """Train / validation / test splits. Model selection uses ``val``; ``test`` is only reported."""

    train: Dataset
    val: Dataset
    test: Dataset
    info: DataInfo
