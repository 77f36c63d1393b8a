"""The ``diffusion`` task: unconditional DDPM noise-prediction UNets on any image dataset.

A model is called as ``model(sample, timestep)`` and returns diffusers' ``UNet2DOutput`` (``.sample`` is
the predicted noise). Images of any registered image dataset are mapped back to [-1, 1] from the
normalisation the dataset records (``DataInfo.extra`` mean/std); labels are ignored.

- Training (base model and fine-tuning): the DDPM noise-prediction MSE at uniformly drawn timesteps of
  the cosine schedule (see :mod:`.sampling`), AdamW (weight decay 0) with the learning rate annealed by a
  cosine over all steps, no EMA (with the few hundred steps a CPU allows, an EMA of the weights lags
  the model). With a ``teacher``: + MSE between the student's and the teacher's predicted noise.
- Quality (``neg_mse``, higher is better): minus the denoising MSE on the split at fixed (noise,
  timestep) pairs, one pair per image drawn from a generator seeded by the split, so every model is
  scored on exactly the same problems. ``mse`` and the MSE per quarter of the timesteps
  (``mse_t0_249`` ... ``mse_t750_999``) are reported beside it.
- Cost: FLOPs of one UNet call at batch 1 (one denoising step, the budget's unit; for a composite of
  UNets serving different timesteps, the mean over the sampler's timesteps), and of a whole
  sampling run at the stated sampler and step count (no classifier-free guidance here, so one call per
  step). Latency: one step at batch 1 and at batch 16 (beside the base model for a speed-up), and one
  sampling run at batch 1.
- Reported beside the quality (:meth:`report`, not used for selection): Frechet distances of samples to
  the validation and test images on a fixed encoder (:mod:`.sample_quality`).
- Taylor importance (``loss``): Diff-Pruning's rule. The denoising loss of one batch is evaluated
  (without gradients) at t = 0, ``taylor_stride``, 2 * ``taylor_stride``, ... and the timesteps up to the
  first whose loss falls below ``taylor_threshold`` (0.05, the paper's CIFAR-10 value) times the largest
  loss so far are kept: the low-noise steps whose gradients carry the detail, without the high-noise
  steps whose loss is small and uninformative. The loss whose gradients are accumulated takes each image
  of the batch at one kept timestep in turn (a one-pass estimate of the mean over them, where the
  original sums one pass per timestep).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from automl_prune.data.base import DataSplits
from automl_prune.diffusion.sample_quality import FD_SAMPLES, frechet_distances, reference, unit_range
from automl_prune.diffusion.sampling import TRAIN_TIMESTEPS, noise_scheduler, sample, sampler_timesteps
from automl_prune.figures import save_sample_grid
from automl_prune.flops import FLOPS_CONVENTION
from automl_prune.latency import SEARCH_BUDGET_S, Latency, measure_calls, measure_latency
from automl_prune.model_io import Inputs, to_device
from automl_prune.progress import Progress
from automl_prune.pruning.composite import CompositeModel, groups
from automl_prune.tasks.base import SPLITS, SingleCallTask, eval_mode, split_dataset

INTERVALS = 4  # timestep quarters the denoising MSE is reported on
GRID_SAMPLES = 8


@dataclass(frozen=True)
class DiffusionTask(SingleCallTask):
    """The ``diffusion`` task; its quality metric ``neg_mse`` is minus the validation denoising MSE."""

    name: str = "diffusion"
    quality_metric: str = "neg_mse"
    base_epochs: int = 60
    base_lr: float = 2e-3
    batch_size: int = 64
    flops_unit: str = "denoising step"
    sampler: str = "ddim"
    sample_steps: int = 50
    fd_samples: int = FD_SAMPLES  # samples generated for the Frechet distances (per split, if conditional)
    distill_weight: float = 1.0
    taylor_threshold: float = 0.05
    taylor_stride: int = 20

    def images(self, batch: Any, data: DataSplits, device: torch.device) -> torch.Tensor:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return unit_range(x.to(device).float(), data.info.extra)

    def condition(
        self, batch: Any, data: DataSplits, device: torch.device, *, training: bool = False
    ) -> tuple[torch.Tensor, ...]:
        """The model's inputs after ``(sample, timestep)`` for ``batch``: none here (unconditional); a
        conditional task returns e.g. the captions' token states (``training``: with its dropout)."""
        return ()

    def denoising_loss(
        self,
        model: nn.Module,
        x0: torch.Tensor,
        t: torch.Tensor,
        noise: torch.Tensor,
        condition: tuple[torch.Tensor, ...] = (),
    ) -> torch.Tensor:
        """Per-image MSE of the predicted noise at timesteps ``t``."""
        noisy = noise_scheduler().add_noise(x0, noise, t)
        return (model(noisy, t, *condition).sample - noise).square().flatten(1).mean(1)

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
        generator = torch.Generator().manual_seed(seed)
        loader = DataLoader(data.train, batch_size=batch_size, shuffle=True, generator=generator)
        scheduler = noise_scheduler()
        model.to(device).train()
        if teacher is not None:
            teacher.to(device).eval()
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
        annealing = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs * len(loader)))
        for _ in progress.bar(range(epochs), "epochs", total=epochs):
            for batch in loader:
                x0 = self.images(batch, data, device)
                condition = self.condition(batch, data, device, training=True)
                t = torch.randint(0, TRAIN_TIMESTEPS, (len(x0),), generator=generator).to(device)
                noise = torch.randn(x0.shape, generator=generator).to(device)
                noisy = scheduler.add_noise(x0, noise, t)
                eps = model(noisy, t, *condition).sample
                loss = F.mse_loss(eps, noise)
                if teacher is not None:
                    with eval_mode(teacher):
                        target = teacher(noisy, t, *condition).sample
                    loss = loss + self.distill_weight * F.mse_loss(eps, target)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                annealing.step()
        return model

    def evaluate(
        self, model: nn.Module, data: DataSplits, split: str, *, batch_size: int, device: torch.device
    ) -> dict[str, float]:
        dataset = split_dataset(data, split)
        generator = torch.Generator().manual_seed(SPLITS.index(split))
        t = torch.randint(0, TRAIN_TIMESTEPS, (len(dataset),), generator=generator)
        noise = torch.randn((len(dataset), *data.info.input_shape), generator=generator)
        errors, start = [], 0
        with eval_mode(model.to(device)):
            for batch in DataLoader(dataset, batch_size=batch_size):
                x0 = self.images(batch, data, device)
                part = slice(start, start + len(x0))
                condition = self.condition(batch, data, device)
                errors.append(
                    self.denoising_loss(
                        model, x0, t[part].to(device), noise[part].to(device), condition
                    ).cpu()
                )
                start += len(x0)
        error = torch.cat(errors)
        metrics = {"neg_mse": -float(error.mean()), "mse": float(error.mean())}
        width = TRAIN_TIMESTEPS // INTERVALS
        for lo in range(0, TRAIN_TIMESTEPS, width):
            inside = (t >= lo) & (t < lo + width)
            if inside.any():
                metrics[f"mse_t{lo}_{lo + width - 1}"] = float(error[inside].mean())
        return metrics

    def example_input(self, data: DataSplits, batch: int = 1) -> Inputs:
        sample_shape = (batch, *data.info.input_shape)
        return torch.zeros(sample_shape), torch.full((batch,), TRAIN_TIMESTEPS // 2, dtype=torch.long)

    def loss(self, model: nn.Module, batch: Any, data: DataSplits, device: torch.device) -> torch.Tensor:
        """Diff-Pruning's loss: the denoising loss of ``batch`` over :meth:`taylor_timesteps`, each image at
        one of them in turn, so one UNet pass (and one graph in memory) estimates their mean."""
        x0 = self.images(batch, data, device)
        condition = self.condition(batch, data, device)
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0)).to(device)
        kept = torch.tensor(self.taylor_timesteps(model, x0, noise, condition) or [0], device=device)
        steps = kept[torch.arange(len(x0), device=device) % len(kept)]
        return self.denoising_loss(model, x0, steps, noise, condition).mean()

    def taylor_timesteps(
        self,
        model: nn.Module,
        x0: torch.Tensor,
        noise: torch.Tensor,
        condition: tuple[torch.Tensor, ...] = (),
    ) -> list[int]:
        """Diff-Pruning's timesteps for ``x0``: from t = 0 up to (excluding) the first whose loss is below
        ``taylor_threshold`` times the largest loss so far."""
        kept, largest = [], 0.0
        with torch.no_grad():
            for t in range(0, TRAIN_TIMESTEPS, self.taylor_stride):
                steps = torch.full((len(x0),), t, device=x0.device, dtype=torch.long)
                value = float(self.denoising_loss(model, x0, steps, noise, condition).mean())
                largest = max(largest, value)
                if value < self.taylor_threshold * largest:
                    break
                kept.append(t)
        return kept

    def flops(self, model: nn.Module, data: DataSplits) -> int:
        """One UNet call at batch 1; for a composite, the mean over the calls :meth:`served_parts` lists:
        sum over parts of (calls served x the part's FLOPs) / calls."""
        if not isinstance(model, CompositeModel):
            return SingleCallTask.flops(self, model, data)
        served = self.served_parts(model, data)
        total = sum(
            len(rows) * SingleCallTask.flops(self, model.parts[part], data) for part, rows in groups(served)
        )
        return round(total / len(served))

    def served_parts(self, model: CompositeModel, data: DataSplits) -> torch.Tensor:
        """The part serving each call a composite's FLOPs average over: the sampler's actual timesteps
        (the composite's router is a :class:`~automl_prune.pruning.routers.TimestepRouter`)."""
        return model.router.parts_of(torch.tensor(sampler_timesteps(self.sampler, self.sample_steps)))

    def cost(self, model: nn.Module, data: DataSplits, flops: int) -> dict[str, float]:
        return {"flops_per_sampling_run": float(flops * self.sample_steps)}

    def flops_convention(self) -> str:
        return (
            f"per denoising step: one UNet call, {FLOPS_CONVENTION}; flops_per_sampling_run: "
            f"{self.sample_steps} {self.sampler.upper()} steps, one call each (no classifier-free guidance)"
        )

    def report(
        self, model: nn.Module, data: DataSplits, device: torch.device, progress: Progress
    ) -> dict[str, float]:
        """``fd_val``/``fd_test``: Frechet distances of samples to real images (:mod:`.sample_quality`)."""
        ref = reference(data, device, progress)
        if ref is None:
            return {}
        return frechet_distances(
            model,
            ref.encoder,
            ref.features,
            shape=tuple(data.info.input_shape),
            sampler_name=self.sampler,
            steps=self.sample_steps,
            device=device,
            n=self.fd_samples,
        )

    def report_convention(self, data: DataSplits) -> str:
        ref = reference(data, torch.device("cpu"), Progress(quiet=True))
        if ref is None:
            return "no Frechet distance: the data has no labels to train an encoder on and is not RGB"
        return (
            f"fd_val/fd_test: Frechet distance of {self.fd_samples} samples ({self.sampler.upper()}, "
            f"{self.sample_steps} steps, fixed seeds) to the first {FD_SAMPLES} images of the split; "
            f"encoder: {ref.encoder.name}"
        )

    def latency(
        self,
        model: nn.Module,
        data: DataSplits,
        device: torch.device,
        *,
        base: nn.Module | None = None,
        budget_s: float = SEARCH_BUDGET_S,
    ) -> dict[str, Latency]:
        """One step at batch 1 and at batch 16 (each beside ``base`` when given), and one sampling run
        at batch 1, timed alone: the step's speed-up already says what pruning gained, and sampling
        runs are too long to time twice in every trial."""

        def run() -> torch.Tensor:
            return self.generate(model, data, 1, device=device)

        timings = {
            name: measure_latency(
                model, to_device(self.example_input(data, batch), device), base=base, budget_s=budget_s
            )
            for name, batch in (("latency", 1), ("latency_b16", 16))
        }
        timings["sampling"] = measure_calls(
            run, batch=1, device=device, budget_s=budget_s, min_repeats=3, warmup=1
        )
        return timings

    def generate(
        self,
        model: nn.Module,
        data: DataSplits,
        n: int,
        *,
        split: str = "val",
        seed: int = 0,
        device: torch.device,
    ) -> torch.Tensor:
        """``n`` samples in [-1, 1] from seeded noise with the task's sampler (``split``: whose conditions
        a conditional task samples for; unused here)."""
        shape = (n, *data.info.input_shape)
        return sample(
            model, shape, sampler_name=self.sampler, steps=self.sample_steps, seed=seed, device=device
        )

    def figures(
        self, model: nn.Module, base: nn.Module, data: DataSplits, folder: Path, device: torch.device
    ) -> list[Path]:
        """Eight samples of the base and the pruned model from the same noise seeds."""
        rows = [
            (label, self.generate(m, data, GRID_SAMPLES, device=device))
            for label, m in (("base", base), ("pruned", model))
        ]
        path = folder / f"diffusion_samples_{uuid.uuid4().hex[:12]}.png"
        return [save_sample_grid(path, rows, title=f"{self.sampler.upper()}, {self.sample_steps} steps")]
