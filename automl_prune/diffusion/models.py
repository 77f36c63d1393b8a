"""Diffusion UNets built from a diffusers config: the zoo's DDPM UNets and a user's ``diffusers:PATH``.

Nothing is downloaded: the zoo builds untrained ``UNet2DModel`` s from a config, and ``diffusers:PATH``
reads ``config.json`` of a local ``save_pretrained`` directory (its weights are the base model's, see
:func:`diffusers_weights`).

The zoo's widths are chosen so every skip concatenation meets its GroupNorm on a group boundary (all
stages equally wide, or widths and group counts with a common grid): then every channel group can be
pruned in whole norm groups. A UNet whose concatenations straddle norm groups (most published configs)
still prunes; the straddling groups stay whole (``DependencyAnalysis.frozen`` says which).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from automl_prune.data.base import DataInfo
from automl_prune.errors import ModelError

CONFIG = "config.json"
WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
UNET_CLASSES = ("UNet2DModel", "UNet2DConditionModel")

#: ``ddpm-unet-tiny``: ~0.9M parameters, self-attention (6 heads of 8) at the middle resolution.
TINY = {
    "block_out_channels": (48, 48, 48),
    "norm_num_groups": 8,
    "layers_per_block": 1,
    "attention_head_dim": 8,
    "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
}
#: ``ddpm-unet-small``: ~2.5M parameters; widths 48/96/96 with 12 groups keep the skip grid aligned.
SMALL = {**TINY, "block_out_channels": (48, 96, 96), "norm_num_groups": 12}


def square_size(info: DataInfo) -> int:
    """The side of ``info``'s images, refused unless they are square (the zoo's UNets take N x N)."""
    height, width = info.image_size
    if height != width:
        raise ModelError(
            f"the zoo's diffusion UNets take square images, the data gives {height}x{width}",
            "pass --data-arg size=N to resize to N x N",
        )
    return height


def ddpm_unet(info: DataInfo, preset: dict[str, Any], **overrides: Any) -> nn.Module:
    """An untrained ``UNet2DModel`` for ``info``'s image size and channels (square images)."""
    from diffusers import UNet2DModel

    height = square_size(info)
    config = {**preset, **overrides}
    return UNet2DModel(
        sample_size=height, in_channels=info.in_channels, out_channels=info.in_channels, **config
    )


def read_config(path: str | Path) -> dict[str, Any]:
    """The ``config.json`` of a local diffusers UNet directory, checked to be a UNet's."""
    folder = Path(path).expanduser()
    fix = "give a local directory written by UNet2DModel.save_pretrained (nothing is downloaded)"
    file = folder / CONFIG
    if not file.is_file():
        raise ModelError(f"{folder} is not a diffusers model directory: {CONFIG} not found", fix)
    try:
        config = json.loads(file.read_text())
    except ValueError as exc:
        raise ModelError(f"{file} is not valid JSON: {exc}", fix) from exc
    if config.get("_class_name") not in UNET_CLASSES:
        raise ModelError(
            f"{file} describes a {config.get('_class_name')!r}, not one of {', '.join(UNET_CLASSES)}", fix
        )
    return config


def diffusers_unet(info: DataInfo, arg: str | None = None) -> nn.Module:
    """The untrained architecture of the diffusers UNet saved in the directory ``arg``."""
    import diffusers

    if not arg:
        raise ModelError("diffusers needs a directory", "write --model diffusers:PATH")
    config = read_config(arg)
    model = getattr(diffusers, config["_class_name"]).from_config(config)
    size = config.get("sample_size")
    if info.in_channels != model.config.in_channels or (size and tuple(info.image_size) != (size, size)):
        raise ModelError(
            f"the UNet in {arg} takes {model.config.in_channels}x{size}x{size} samples, the data gives "
            f"{info.in_channels}x{info.image_size[0]}x{info.image_size[1]}",
            f"pass --data-arg size={size} (and data with {model.config.in_channels} channels)",
        )
    return model


def diffusers_weights(arg: str) -> Path:
    """The weights file of the diffusers UNet saved in ``arg`` (safetensors preferred)."""
    folder = Path(arg).expanduser()
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise ModelError(
        f"{folder} holds no weights ({' or '.join(WEIGHT_FILES)})",
        "save the model with save_pretrained, or pass --weights FILE",
    )
