"""Registers the ``diffusion`` task, its models and diffusers' layer rules, through the same hooks as any
plugin. Nothing heavy is imported here: diffusers loads when a model is built."""

from __future__ import annotations

from functools import partial
from typing import Any

from automl_prune.hookspecs import hookimpl


@hookimpl
def register_tasks(register: Any) -> None:
    from automl_prune.diffusion.task import DiffusionTask

    register(DiffusionTask())


@hookimpl
def register_models(register: Any) -> None:
    from automl_prune.diffusion.models import SMALL, TINY, ddpm_unet, diffusers_unet, diffusers_weights

    register(
        "ddpm-unet-tiny",
        partial(ddpm_unet, preset=TINY),
        task="diffusion",
        description="DDPM UNet2DModel (diffusers), widths 48/48/48, attention at the middle level, ~0.9M",
    )
    register(
        "ddpm-unet-small",
        partial(ddpm_unet, preset=SMALL),
        task="diffusion",
        description="DDPM UNet2DModel (diffusers), widths 48/96/96, attention at the middle level, ~2.5M",
    )
    register(
        "diffusers",
        diffusers_unet,
        task="diffusion",
        weights=diffusers_weights,
        description="diffusers:PATH, a local save_pretrained UNet directory (config and weights)",
    )


@hookimpl
def register_layer_rules(register: Any) -> None:
    from automl_prune.diffusion.layers import RULES

    for rule in RULES:
        register(rule)
