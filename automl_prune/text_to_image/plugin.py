"""Registers the ``text-to-image`` task, its model and its captioned datasets, through the same hooks as
any plugin. Nothing heavy is imported here: diffusers and transformers load when a model is built."""

from __future__ import annotations

from functools import partial
from typing import Any

from automl_prune.hookspecs import hookimpl


@hookimpl
def register_tasks(register: Any) -> None:
    from automl_prune.text_to_image.task import TextToImageTask

    register(TextToImageTask())


@hookimpl
def register_models(register: Any) -> None:
    from automl_prune.text_to_image.models import TINY, t2i_unet

    register(
        "t2i-unet-tiny",
        partial(t2i_unet, preset=TINY),
        task="text-to-image",
        description="UNet2DConditionModel (diffusers), widths 32/64/64, cross-attention to captions, ~1.7M",
    )


@hookimpl
def register_datasets(register: Any) -> None:
    from automl_prune.text_to_image.captions import digits_captions
    from automl_prune.text_to_image.fashion_captions import fashion_captions
    from automl_prune.text_to_image.photo_captions import photo_captions

    register(
        "digits-captions",
        digits_captions,
        task="text-to-image",
        description="digits with captions from label, stroke thickness and slant; val/test prompts unseen",
    )
    register(
        "fashion-captions",
        fashion_captions,
        task="text-to-image",
        description="3000 Fashion-MNIST garments with captions from class, size, brightness; prompts unseen",
    )
    register(
        "photo-captions",
        photo_captions,
        task="text-to-image",
        description="RGB patches of 8 sample photos captioned by brightness, place, photo; prompts unseen",
    )
