"""Conditional diffusion UNets of the ``text-to-image`` task, built from a diffusers config.

``t2i-unet-tiny`` is a ``UNet2DConditionModel`` with cross-attention to the caption's token states in
the two lower down blocks, the middle block and the two matching up blocks (self-attention, cross-
attention and a GEGLU feed-forward in each transformer block, as in Stable Diffusion's UNet), about
1.5M parameters at 16x16. Its ``cross_attention_dim`` is the width of the dataset's text encoder, so the
same factory serves the random encoder and a user's CLIP directory.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from automl_prune.data.base import DataInfo
from automl_prune.diffusion.models import square_size
from automl_prune.errors import ModelError
from automl_prune.text_to_image.text_encoder import text_encoder

#: ``t2i-unet-tiny``: widths 32/64/64 in 8 groups, heads of 8 channels, one transformer layer per block.
TINY = {
    "block_out_channels": (32, 64, 64),
    "norm_num_groups": 8,
    "layers_per_block": 1,
    "attention_head_dim": 8,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
}


def t2i_unet(info: DataInfo, preset: dict[str, Any], **overrides: Any) -> nn.Module:
    """An untrained ``UNet2DConditionModel`` for ``info``'s square images and text encoder."""
    from diffusers import UNet2DConditionModel

    size = square_size(info)
    if info.task != "text-to-image":
        raise ModelError(
            f"{info.name!r} has no captions (its task is {info.task})",
            "use a captioned dataset of the text-to-image task, e.g. --data digits-captions",
        )
    config = {**preset, **overrides}
    return UNet2DConditionModel(
        sample_size=size,
        in_channels=info.in_channels,
        out_channels=info.in_channels,
        cross_attention_dim=text_encoder(info.extra).width,
        **config,
    )
