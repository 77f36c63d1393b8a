"""The ``text-to-image`` task: conditional noise-prediction UNets called as ``model(sample, timestep,
encoder_hidden_states)``, on captioned images.

It is the ``diffusion`` task (:class:`~automl_prune.diffusion.task.DiffusionTask`: schedule, DDIM-50
sampling, the denoising metric at fixed (noise, timestep) pairs, Diff-Pruning's Taylor rule) with a
condition: a dataset sample is ``(image, caption_id, label)``, and the caption's token states from the
dataset's frozen text encoder (:mod:`.text_encoder`, computed once per caption) are the UNet's third
input. What the condition changes:

- Training drops the caption with probability ``cfg_dropout`` (0.1): the empty caption's states stand
  in, so one UNet learns the unconditional prediction that classifier-free guidance needs.
- Sampling uses classifier-free guidance, eps = eps(empty) + ``guidance`` x (eps(caption) - eps(empty)),
  both predictions in one call on a doubled batch. ``guidance`` 1.5 by the validation agreement of the
  40-epoch base on digits-captions (128 samples): 0.77 at 1.0 (no guidance), 0.90 at 1.5, 0.81 at 2.0,
  0.32 at 3.0 (Stable Diffusion's 7.5 is for a far larger model).
- FLOPs per denoising step count both guidance passes: twice fvcore's count of one UNet call at batch 1
  (the text encoder runs once per prompt, not per step, and is not counted). A composite of experts
  routed by prompt (:class:`~automl_prune.pruning.routers.PromptRouter`) samples each prompt, both
  guidance passes, with its own expert; its FLOPs are the mean over the report's validation prompts of
  their experts' FLOPs.
- Reported beside the quality (not used for selection): Frechet distances of samples generated for the
  first 256 captions of the validation and test splits (prompts unseen in training) to those splits'
  images, on the plain-CNN classifier's features, and ``agreement_<split>``: the share of those samples
  the same classifier reads as the caption's digit (or class).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from automl_prune.data.base import DataInfo, DataSplits
from automl_prune.diffusion.sample_quality import (
    SAMPLE_BATCH,
    dataset_range,
    reference,
    reference_classifier,
)
from automl_prune.diffusion.sampling import denoise
from automl_prune.diffusion.task import GRID_SAMPLES, DiffusionTask
from automl_prune.figures import save_sample_grid
from automl_prune.flops import FLOPS_CONVENTION
from automl_prune.frechet import encode_in_batches, frechet_distance
from automl_prune.model_io import Inputs, evaluating
from automl_prune.progress import Progress
from automl_prune.pruning.composite import CompositeModel, PromptRouter, groups
from automl_prune.tasks.base import SPLITS, split_dataset
from automl_prune.text_to_image.text_encoder import text_encoder

EMPTY = ""  # the caption classifier-free guidance's unconditional branch sees


@dataclass(frozen=True)
class TextToImageTask(DiffusionTask):
    """The ``text-to-image`` task; its quality metric ``neg_mse`` is minus the validation denoising MSE
    with the true captions."""

    name: str = "text-to-image"
    model_calls: int = 2  # classifier-free guidance: the caption's and the empty caption's prediction
    base_epochs: int = 40
    guidance: float = 1.5  # digits-captions, 40-epoch base: the caption's digit in 90% of val samples
    cfg_dropout: float = 0.1

    def condition(
        self, batch: Any, data: DataSplits, device: torch.device, *, training: bool = False
    ) -> tuple[torch.Tensor, ...]:
        ids = batch[1].long()
        if training and self.cfg_dropout > 0:
            dropped = torch.rand(len(ids)) < self.cfg_dropout
            ids = torch.where(dropped, torch.full_like(ids, len(data.info.extra["captions"])), ids)
        return (caption_states(data)[ids].to(device),)

    def example_input(self, data: DataSplits, batch: int = 1) -> Inputs:
        sample, t = super().example_input(data, batch)
        states = caption_states(data)[:1].expand(batch, -1, -1)
        return sample, t, states

    def flops_convention(self) -> str:
        return (
            f"per denoising step: two UNet calls (classifier-free guidance: caption and empty caption), "
            f"{FLOPS_CONVENTION}; the text encoder (once per prompt) not counted; flops_per_sampling_run: "
            f"{self.sample_steps} {self.sampler.upper()} steps"
        )

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
        """Samples in [-1, 1] for the captions of the first ``n`` images of ``split``, with guidance."""
        return self.generate_for(model, data, caption_ids(data, split, n), seed=seed, device=device)

    def generate_for(
        self, model: nn.Module, data: DataSplits, ids: torch.Tensor, *, seed: int = 0, device: torch.device
    ) -> torch.Tensor:
        """One guided sample per caption id (``len(data.info.extra["captions"])``: the empty caption).

        A composite routed by prompt samples each expert's prompts as one group through that expert
        alone (:func:`experts`), so a prompt's empty-caption prediction comes from its own expert too.
        The initial noise is drawn for all ``ids`` at once from ``seed``, so with DDIM (deterministic
        after it) a prompt's sample does not depend on how the prompts are grouped; DDPM's per-step
        noise is drawn per group.
        """
        table = caption_states(data).to(device)
        return self.sample_states(
            model, table[ids.to(device)], table[-1:], data.info, seed=seed, device=device
        )

    def generate_text(
        self, model: nn.Module, prompts: list[str], info: DataInfo, *, seed: int = 0, device: torch.device
    ) -> torch.Tensor:
        """One guided sample per free-text prompt, encoded by the text encoder ``info`` records (the one
        the model was trained with; the ``random`` encoder reads words outside its captions as unknown)."""
        states = text_encoder(info.extra).encode([*prompts, EMPTY])[0].to(device)  # not cached: any text
        return self.sample_states(model, states[:-1], states[-1:], info, seed=seed, device=device)

    def sample_states(
        self,
        model: nn.Module,
        prompts: torch.Tensor,
        empty: torch.Tensor,
        info: DataInfo,
        *,
        seed: int,
        device: torch.device,
    ) -> torch.Tensor:
        """Guided samples for the prompts' token states (B, tokens, D), ``empty``: the empty caption's
        (1, tokens, D); grouped by expert as :meth:`generate_for` says."""
        shape = (len(prompts), *info.input_shape)
        noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
        samples = torch.empty(shape, device=device)
        with evaluating(model):
            for expert, rows in experts(model, prompts):
                states = torch.cat([empty.expand(len(rows), -1, -1), prompts[rows]])
                samples[rows] = self._guided(expert, states, noise[rows.cpu()], seed, device)
        return samples

    def _guided(
        self, model: nn.Module, states: torch.Tensor, noise: torch.Tensor, seed: int, device: torch.device
    ) -> torch.Tensor:
        """Samples from ``noise`` with guidance; ``states``: the empty caption's rows, then the prompts'."""

        def predict(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            empty, captioned = model(torch.cat([x, x]), torch.cat([t, t]), states).sample.chunk(2)
            return empty + self.guidance * (captioned - empty)

        return denoise(
            predict,
            tuple(noise.shape),
            sampler_name=self.sampler,
            steps=self.sample_steps,
            seed=seed,
            device=device,
            noise=noise,
        )

    def served_parts(self, model: CompositeModel, data: DataSplits) -> torch.Tensor:
        """For a composite routed by prompt: the part of each caption the report samples (the first
        ``fd_samples`` of the validation split), so the FLOPs are the mean per step over those prompts."""
        if not isinstance(model.router, PromptRouter):
            return super().served_parts(model, data)
        return model.router.parts_of(caption_states(data)[caption_ids(data, "val", self.fd_samples)])

    def report(
        self, model: nn.Module, data: DataSplits, device: torch.device, progress: Progress
    ) -> dict[str, float]:
        """``fd_<split>`` and ``agreement_<split>`` for val and test (see the module doc)."""
        labelled = classification_view(data)
        ref = reference(labelled, device, progress)
        classifier = reference_classifier(labelled, device, progress)
        metrics: dict[str, float] = {"fd_samples": float(self.fd_samples)}
        for split in SPLITS[1:]:
            ids = caption_ids(data, split, self.fd_samples)
            fake = torch.cat(
                [
                    self.generate_for(model, data, ids[i : i + SAMPLE_BATCH], seed=1000 + i, device=device)
                    for i in range(0, len(ids), SAMPLE_BATCH)
                ]
            )
            if ref is not None:
                features = encode_in_batches(ref.encoder, fake)
                metrics[f"fd_{split}"] = frechet_distance(features, ref.features[split], method="svd")
            with torch.no_grad():
                read = classifier(dataset_range(fake, data.info.extra)).argmax(1).cpu()
            metrics[f"agreement_{split}"] = float((read == labels(data, split, len(ids))).float().mean())
        return metrics

    def report_convention(self, data: DataSplits) -> str:
        return (
            f"fd_val/fd_test: Frechet distance of guided samples (guidance {self.guidance}, "
            f"{self.sampler.upper()} {self.sample_steps} steps) for the first {self.fd_samples} captions of "
            "the split to its images, on the plain-CNN classifier's pooled features; agreement_val/_test: "
            "the share of those samples the classifier reads as their caption's class"
        )

    def figures(
        self, model: nn.Module, base: nn.Module, data: DataSplits, folder: Path, device: torch.device
    ) -> list[Path]:
        """Samples of the base and the pruned model for the same validation captions and noise."""
        ids = caption_ids(data, "val", GRID_SAMPLES)
        rows = [
            (label, self.generate_for(m, data, ids, device=device))
            for label, m in (("base", base), ("pruned", model))
        ]
        captions = data.info.extra["captions"]
        title = "; ".join(captions[int(i)] for i in ids[:3]) + " ..."
        path = folder / f"t2i_samples_{uuid.uuid4().hex[:12]}.png"
        return [save_sample_grid(path, rows, title=title)]


def experts(model: nn.Module, prompts: torch.Tensor) -> list[tuple[nn.Module, torch.Tensor]]:
    """The models that serve ``prompts`` (token states (B, tokens, D)), each with its rows: the parts of
    a composite routed by prompt, called directly; any other model serves all rows itself."""
    if isinstance(model, CompositeModel) and isinstance(model.router, PromptRouter):
        return [(model.parts[part], rows) for part, rows in groups(model.router.parts_of(prompts))]
    return [(model, torch.arange(len(prompts), device=prompts.device))]


class _Labelled(Dataset):
    """``(image, label)`` items of a captioned dataset (``(image, caption_id, label)``)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, _, label = self.dataset[index]
        return image, label


def classification_view(data: DataSplits) -> DataSplits:
    """The captioned splits as a classification dataset of their labels: what the reference classifier
    (Frechet features, agreement) trains on."""
    info = replace(data.info, task="classification")
    return DataSplits(*(_Labelled(split_dataset(data, s)) for s in SPLITS), info=info)


def caption_ids(data: DataSplits, split: str, n: int) -> torch.Tensor:
    """The caption ids of the first ``n`` items of ``split``."""
    return _field(data, split, n, 1)


def labels(data: DataSplits, split: str, n: int) -> torch.Tensor:
    """The labels of the first ``n`` items of ``split``."""
    return _field(data, split, n, 2)


def _field(data: DataSplits, split: str, n: int, index: int) -> torch.Tensor:
    """Field ``index`` of the ``(image, caption_id, label)`` items, for the first ``n`` of ``split``."""
    dataset = split_dataset(data, split)
    return torch.tensor([int(dataset[i][index]) for i in range(min(n, len(dataset)))])


def caption_states(data: DataSplits) -> torch.Tensor:
    """Token states of every caption of ``data`` and, last, of the empty caption: (captions + 1,
    tokens, width), computed once per process and dataset (the encoder is frozen)."""
    captions = tuple(data.info.extra["captions"])
    return _states(text_encoder(data.info.extra), (*captions, EMPTY))


@cache
def _states(encoder: Any, captions: tuple[str, ...]) -> torch.Tensor:
    return encoder.encode(list(captions))[0]
