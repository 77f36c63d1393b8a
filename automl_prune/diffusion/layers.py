"""Layer rules for diffusers' UNet building blocks (see :mod:`automl_prune.pruning.layers`).

- ``Attention``: ``to_q``/``to_k``/``to_v`` lose whole heads only. Its processor computes the head size
  as ``inner_dim // heads`` and lets ``scaled_dot_product_attention`` scale by ``1/sqrt(head size)``, so
  the head size must stay and ``heads`` follow the new width; a head whose q, k and v are gated to zero
  adds exactly nothing, as a removed head does.
- ``Upsample2D``/``Downsample2D``: their ``channels`` (asserted in forward) and ``out_channels`` follow
  their conv.
- ``GEGLU`` (the feed-forward of a transformer block): its ``proj`` output is split in two halves that
  are multiplied channel by channel, so channel i goes with channel i + inner. It loses one of
  ``FF_GROUPS`` (32) groups of the inner dimension at a time, the group's rows in both halves
  (``Unit(inner / 32, 2)``); an inner width not divisible by 32 stays whole.
"""

from __future__ import annotations

from torch import nn

from automl_prune.pruning.layers import LayerRule, Unit

ATTENTION = "diffusers.models.attention_processor.Attention"
GEGLU = "diffusers.models.activations.GEGLU"
FF_GROUPS = 32
RESAMPLERS = ("diffusers.models.upsampling.Upsample2D", "diffusers.models.downsampling.Downsample2D")


def _head_dim(attn: nn.Module) -> int:
    return attn.inner_dim // attn.heads


def _attention_units(attn: nn.Module) -> dict[str, int]:
    return dict.fromkeys(("to_q", "to_k", "to_v"), _head_dim(attn))


def _attention_follow(sliced: nn.Module, original: nn.Module) -> None:
    head = _head_dim(original)
    sliced.inner_dim = sliced.to_q.out_features
    sliced.inner_kv_dim = sliced.to_k.out_features
    sliced.heads = sliced.inner_dim // head


def _resampler_follow(sliced: nn.Module, original: nn.Module) -> None:
    conv = getattr(sliced, "conv", None)
    if isinstance(conv, nn.modules.conv._ConvNd):
        sliced.channels, sliced.out_channels = conv.in_channels, conv.out_channels


def _feed_forward_groups(geglu: nn.Module) -> dict[str, int | Unit]:
    inner = geglu.proj.out_features // 2
    return {"proj": Unit(inner // FF_GROUPS, 2) if inner % FF_GROUPS == 0 else 2 * inner}


RULES = (
    LayerRule(GEGLU, units=_feed_forward_groups),
    LayerRule(
        ATTENTION,
        units=_attention_units,
        follow=_attention_follow,
        attributes=("heads", "inner_dim", "inner_kv_dim"),
    ),
    *(
        LayerRule(name, follow=_resampler_follow, attributes=("channels", "out_channels"))
        for name in RESAMPLERS
    ),
)
