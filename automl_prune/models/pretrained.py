"""The base model a search prunes: the user's local weights, or one trained here on demand and cached.

Nothing is downloaded. Weights for another number of classes get a new head and are trained (see
:func:`get_base_model`). A model family that brings its own weights (``diffusers:PATH``) is loaded with
them unless ``weights`` is given. Without either, the model is trained with the task's recipe and stored in
the cache (``$AUTOML_PRUNE_CACHE`` or ``~/.cache/automl_prune``, folder ``base_models``) as safetensors
under a key of everything that determines it (model, data, epochs, lr, batch size, seed, automl_prune
version), so a second search on the same base model loads it instead of training again.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from safetensors.torch import save
from torch import nn

import automl_prune
from automl_prune.data.base import DataSplits
from automl_prune.io import atomic_write_bytes, content_key
from automl_prune.io import cache_dir as default_cache_dir
from automl_prune.models.base import ModelRef
from automl_prune.models.checkpoints import file_digest, load_pretrained, load_weights
from automl_prune.models.registry import build_model, default_weights
from automl_prune.progress import Progress
from automl_prune.tasks.base import Task


def base_model_path(
    ref: ModelRef,
    data: DataSplits,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    cache_dir: Path,
    start: str | None = None,
) -> Path:
    """Where the base model trained with these settings (from the weights file hashed as ``start``, or
    from scratch) is cached."""
    key = content_key(
        ref.to_dict(), dataclasses.asdict(data.info), epochs, lr, batch_size, seed, automl_prune.__version__
    )
    if start is not None:  # keys of models trained from scratch stay as they were
        key = content_key(key, start)
    return cache_dir / "base_models" / f"{key}.safetensors"


def get_base_model(
    ref: ModelRef,
    data: DataSplits,
    task: Task,
    *,
    weights: str | Path | None,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    device: torch.device,
    progress: Progress,
    cache_dir: Path | None = None,
) -> nn.Module:
    """The base model in eval mode on ``device``: loaded from ``weights``, the cache, or trained now.

    Weights whose classifier head has another number of classes (an ImageNet checkpoint on a 10-class
    folder) keep the model's fresh head, and the whole model is then trained with the base recipe
    (``epochs``, ``lr``): fine-tuning all layers, not only the head, because pruning fine-tunes all of
    them anyway and a frozen ImageNet backbone fits a far-off domain (digits, medical images) poorly.
    """
    settings = {"epochs": epochs, "lr": lr, "batch_size": batch_size, "seed": seed}
    with torch.random.fork_rng(devices=[]):  # seeded init without disturbing the caller's RNG
        torch.manual_seed(seed)
        model = build_model(ref, data.info)
        weights = weights if weights is not None else default_weights(ref.name)
        start = None
        if weights is not None:
            replaced = load_pretrained(model, weights)
            if replaced is None:
                return model.to(device).eval()
            progress.log(f"base model {ref.name}: {replaced}")
            start = file_digest(weights)
        path = base_model_path(ref, data, cache_dir=cache_dir or default_cache_dir(), start=start, **settings)
        if path.is_file():
            progress.log(f"base model {ref.name}: loaded from cache {path}")
            return load_weights(model, path).to(device).eval()
        progress.log(f"base model {ref.name}: training {epochs} epochs (cached afterwards in {path})")
        task.train(model, data, device=device, progress=progress, **settings)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, save(state, metadata={"model": ref.name, "data": data.info.name}))
    return model.eval()
