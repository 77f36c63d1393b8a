"""Stage 1: how alike the denoising problems at two timesteps are, S(t, t'), on the pretrained UNet.

Both measures run the model on one batch of clean training images ``x0`` (in the model's range, [-1, 1],
as ``DiffusionTask.images`` gives them) noised at each grid timestep with ONE seeded draw of noise shared
by every t, so the rows of S differ by the timestep alone:

- :func:`gradient_similarity` (the default): the cosine similarity of the gradients of the batch's
  noise-prediction MSE (the diffusion task's training loss) w.r.t. a fixed parameter subset. Two timesteps
  whose gradients point the same way ask the same of the weights, so one expert can serve both.
- :func:`activation_cka`: linear CKA between the activations of chosen layers (default: the mid block,
  the bottleneck every path goes through) at t and t': whether the network represents the batch alike.

Each S is a Gram matrix of unit vectors, so it is symmetric and positive semi-definite, with a unit
diagonal and values in [-1, 1] (CKA in [0, 1]). :mod:`.intervals` clusters it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from automl_prune.api import AutomlPruneError, ModelError, Progress, eval_mode

DEFAULT_POINTS = 50
#: The default gradient subset: the last conv of every resnet block of the down, mid and up blocks. That
#: conv writes the block's update to the residual stream, so its gradient says what the block is asked to
#: change at t; one tensor per block covers every stage and resolution (and the blocks and channels the
#: experts prune) at about a third of the conv weights, which keeps 50 stored gradients small (tiny UNet:
#: 11 tensors, 0.23M values each row). Attention, time embedding, norms and conv_in/conv_out are left out.
RESNET_OUTPUT_CONV = re.compile(r"^(down_blocks|mid_block|up_blocks)\..*resnets\.\d+\.conv2\.weight$")
DEFAULT_LAYERS = ("mid_block",)


def timestep_grid(num_train_timesteps: int, points: int = DEFAULT_POINTS) -> list[int]:
    """``points`` distinct training timesteps evenly spaced from 0 to ``num_train_timesteps - 1``."""
    if not 2 <= points <= num_train_timesteps:
        raise AutomlPruneError(
            f"a timestep grid takes 2 to {num_train_timesteps} points, got {points}",
            f"give e.g. points={min(DEFAULT_POINTS, num_train_timesteps)}",
        )
    grid = torch.linspace(0, num_train_timesteps - 1, points, dtype=torch.float64).round().long()
    return grid.tolist()


def resnet_output_weights(model: nn.Module) -> list[nn.Parameter]:
    """The default gradient subset of a diffusers UNet (:data:`RESNET_OUTPUT_CONV`)."""
    found = [p for name, p in model.named_parameters() if RESNET_OUTPUT_CONV.match(name)]
    if not found:
        raise ModelError(
            f"{type(model).__name__} has no resnet blocks named like down_blocks.*.resnets.N.conv2 "
            "(a diffusers UNet's), whose weights the timestep similarity takes gradients of",
            "pass parameters= with the weights to compare gradients on",
        )
    return found


def cosine_matrix(vectors: torch.Tensor) -> torch.Tensor:
    """Cosine similarities between the rows of ``vectors``: symmetric, unit diagonal, in [-1, 1]
    (float64 on the CPU; a zero row is dissimilar to every other row)."""
    unit = F.normalize(vectors.detach().double(), dim=1)
    similarity = unit @ unit.T
    similarity = ((similarity + similarity.T) / 2).clamp(-1, 1).cpu()
    return similarity.fill_diagonal_(1.0)


def linear_cka_matrix(activations: Sequence[torch.Tensor]) -> torch.Tensor:
    """Linear CKA between every pair of activation batches (each ``(n, ...)``, the same n samples).

    CKA(X, Y) = ||Xc^T Yc||^2 / (||Xc^T Xc|| ||Yc^T Yc||) with column-centred features equals the cosine
    between the centred n x n Gram matrices Xc Xc^T and Yc Yc^T, so CKA is :func:`cosine_matrix` of the
    flattened Grams.
    """
    return cosine_matrix(torch.stack([_centred_gram(a) for a in activations]))


def _centred_gram(activations: torch.Tensor) -> torch.Tensor:
    """The flattened n x n Gram matrix of the column-centred features (all CKA needs of a batch)."""
    x = activations.detach().flatten(1).double()
    x = x - x.mean(0)
    return (x @ x.T).flatten()


def gradient_similarity(
    model: nn.Module,
    images: torch.Tensor,
    timesteps: Sequence[int],
    *,
    scheduler: Any,
    parameters: Iterable[nn.Parameter] | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> torch.Tensor:
    """S[i, j] = cosine of the gradients of the batch-mean denoising loss at ``timesteps[i]`` and
    ``timesteps[j]`` w.r.t. ``parameters`` (default :func:`resnet_output_weights`).

    ``scheduler`` noises the images (its ``add_noise``: ``automl_prune.api.noise_scheduler()``). The model
    runs in eval mode and its ``.grad`` fields are left untouched; one forward and backward pass per grid
    point, the gradient rows (points x subset size floats) held on the model's device.
    """
    params = list(parameters) if parameters is not None else resnet_output_weights(model)
    noise = _fixed_noise(images, seed)
    rows = []
    with eval_mode(model), torch.enable_grad(), _requiring_grad(params):
        for t in (progress or Progress()).bar(timesteps, "timestep gradients"):
            noisy, steps = _noised(scheduler, images, noise, t)
            loss = F.mse_loss(model(noisy, steps).sample, noise)
            grads = torch.autograd.grad(loss, params)
            rows.append(torch.cat([g.flatten() for g in grads]))
    return cosine_matrix(torch.stack(rows))


def activation_cka(
    model: nn.Module,
    images: torch.Tensor,
    timesteps: Sequence[int],
    *,
    scheduler: Any,
    layers: Sequence[str] | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> torch.Tensor:
    """S[i, j] = linear CKA between the outputs of ``layers`` (module names, default the mid block) on the
    batch noised at ``timesteps[i]`` and at ``timesteps[j]``; with several layers, the mean of their CKAs.
    Needs at least two images (CKA compares the samples' geometry within the batch); per layer and grid
    point only the batch's n x n Gram matrix is kept, not the activations."""
    if len(images) < 2:
        raise AutomlPruneError(
            f"activation CKA compares samples within a batch and needs at least 2 images, got {len(images)}",
            "pass a batch of several training images (e.g. 64)",
        )
    names = list(layers or DEFAULT_LAYERS)
    modules = dict(model.named_modules())
    missing = [name for name in names if name not in modules]
    if missing:
        raise ModelError(
            f"{type(model).__name__} has no module {', '.join(map(repr, missing))} to take activations of",
            "name modules as model.named_modules() lists them, e.g. mid_block or up_blocks.0",
        )
    noise = _fixed_noise(images, seed)
    captured: dict[str, torch.Tensor] = {}
    hooks = [modules[name].register_forward_hook(_capture(captured, name)) for name in names]
    per_layer: list[list[torch.Tensor]] = [[] for _ in names]
    try:
        with eval_mode(model):
            for t in (progress or Progress()).bar(timesteps, "timestep activations"):
                noisy, steps = _noised(scheduler, images, noise, t)
                model(noisy, steps)
                for grams, name in zip(per_layer, names, strict=True):
                    grams.append(_centred_gram(captured[name]))
    finally:
        for hook in hooks:
            hook.remove()
    return torch.stack([cosine_matrix(torch.stack(grams)) for grams in per_layer]).mean(0)


def _capture(store: dict[str, torch.Tensor], name: str) -> Any:
    """A forward hook keeping the module's output (the first tensor of a tuple) under ``name``."""

    def hook(module: nn.Module, inputs: Any, output: Any) -> None:
        store[name] = output[0] if isinstance(output, tuple) else output

    return hook


def _fixed_noise(images: torch.Tensor, seed: int) -> torch.Tensor:
    """One draw of noise for the batch, seeded on the CPU so every device and grid point sees the same."""
    return torch.randn(images.shape, generator=torch.Generator().manual_seed(seed)).to(images.device)


def _noised(
    scheduler: Any, images: torch.Tensor, noise: torch.Tensor, t: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch noised at timestep ``t``, and ``t`` as the model's per-sample timestep tensor."""
    steps = torch.full((len(images),), int(t), dtype=torch.long, device=images.device)
    return scheduler.add_noise(images, noise, steps), steps


@contextmanager
def _requiring_grad(params: Sequence[nn.Parameter]) -> Iterator[None]:
    """Gradients w.r.t. ``params`` even when the model is frozen; their flags are restored after."""
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    try:
        yield
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)
