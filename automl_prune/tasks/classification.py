"""Image classification: cross-entropy training, accuracy as quality.

Training recipe (the usual CIFAR one, so base models and fine-tuned pruned models are comparable):
SGD with Nesterov momentum 0.9, weight decay 5e-4, learning rate annealed by a cosine over all steps of
all epochs, seeded shuffling. With a ``teacher`` (knowledge distillation, Hinton et al. 2015) the loss
is ``CE + 0.5 * T**2 * KL(softmax(teacher / T) || softmax(student / T))`` at T = 4; the T**2 keeps the
soft term's gradients on the scale of the hard term's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from automl_prune.data.base import DataSplits
from automl_prune.errors import DataError, TrainingDivergedError
from automl_prune.progress import Progress
from automl_prune.tasks.base import SingleCallTask, eval_mode, split_dataset


@dataclass(frozen=True)
class ClassificationTask(SingleCallTask):
    """The ``classification`` task; its quality metric is top-1 accuracy in [0, 1]."""

    name: str = "classification"
    quality_metric: str = "accuracy"
    base_epochs: int = 10
    base_lr: float = 0.05
    batch_size: int = 64
    momentum: float = 0.9
    weight_decay: float = 5e-4
    temperature: float = 4.0
    distill_weight: float = 0.5

    def distill_loss(self, logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        t = self.temperature
        kl = F.kl_div(
            F.log_softmax(logits / t, dim=1),
            F.log_softmax(teacher_logits / t, dim=1),
            reduction="batchmean",
            log_target=True,
        )
        return self.distill_weight * t * t * kl

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
        loader = DataLoader(
            data.train, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed)
        )
        model.to(device).train()
        if teacher is not None:
            teacher.to(device)
        optimizer = torch.optim.SGD(
            model.parameters(), lr=lr, momentum=self.momentum, nesterov=True, weight_decay=self.weight_decay
        )
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs * len(loader)))
        for epoch in progress.bar(range(epochs), "epochs", total=epochs):
            total = torch.zeros((), device=device)
            for images, labels in loader:
                images, labels = images.to(device), labels.to(device)
                logits = model(images)
                loss = F.cross_entropy(logits, labels)
                if teacher is not None:
                    with eval_mode(teacher):
                        teacher_logits = teacher(images)
                    loss = loss + self.distill_loss(logits, teacher_logits)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                total += loss.detach()
            if not torch.isfinite(total):  # one check per epoch: no sync per step
                raise TrainingDivergedError(
                    f"training diverged: the loss became {total.item()} in epoch {epoch + 1} at learning "
                    f"rate {lr:g}",
                    "lower the learning rate (--base-lr for the base model, lr in the space for trials)",
                )
        return model

    def check_data(self, data: DataSplits) -> None:
        """At least two classes: with one, every prediction is right and accuracy says nothing."""
        if data.info.num_classes < 2:
            raise DataError(
                f"dataset {data.info.name!r} has {data.info.num_classes} class(es); "
                "classification needs 2 or more",
                "give a dataset with at least two classes (for folder: data, one subfolder per class)",
            )

    def evaluate(
        self, model: nn.Module, data: DataSplits, split: str, *, batch_size: int, device: torch.device
    ) -> dict[str, float]:
        dataset = split_dataset(data, split)
        correct, loss_sum = 0, 0.0
        with eval_mode(model.to(device)):
            for images, labels in DataLoader(dataset, batch_size=batch_size):
                images, labels = images.to(device), labels.to(device)
                logits = model(images)
                loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
                correct += (logits.argmax(dim=1) == labels).sum().item()
        return {"accuracy": correct / len(dataset), "loss": loss_sum / len(dataset)}

    def loss(self, model: nn.Module, batch: Any, data: DataSplits, device: torch.device) -> torch.Tensor:
        images, labels = batch
        return F.cross_entropy(model(images.to(device)), labels.to(device))
