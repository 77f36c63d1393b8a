"""Layer rules for the attention of timm's vision transformers (see :mod:`automl_prune.pruning.layers`).

What a ViT/DeiT loses when pruned: whole attention heads and MLP hidden channels. The residual
embedding width stays: every block normalises it with a LayerNorm over all its channels, and it meets
the class token and the position embedding, so no channel of it can be masked exactly (``analyze`` lists
it in ``frozen``).

timm's ``Attention`` computes q, k and v with one ``qkv`` linear layer whose output is read as
``(3, num_heads, head_dim)``: a head is ``head_dim`` rows in each third, so ``qkv`` loses channels in
:class:`Unit` ``(head_dim, 3)`` blocks (torch-pruning's ``num_heads`` grouping), and ``proj`` loses the
matching inputs (torch-pruning couples them through the reshape). The head size stays, so the softmax
scale (``head_dim ** -0.5``, whether timm's fused attention derives it or its own ``scale`` holds it) is
unchanged and a head whose q, k and v are gated to zero adds exactly nothing, as a removed head does.
After slicing ``num_heads`` and ``attn_dim`` follow the new width, and a saved model records them.
torchvision's ``VisionTransformer`` uses ``nn.MultiheadAttention``, whose projections are tied to the
embedding width: there only the MLP hidden channels are pruned.
"""

from __future__ import annotations

from torch import nn

from automl_prune.pruning.layers import LayerRule, Unit

TIMM_ATTENTION = "timm.layers.attention.Attention"


def _qkv_heads(attn: nn.Module) -> dict[str, int | Unit]:
    return {"qkv": Unit(attn.head_dim, 3)}


def _follow_heads(sliced: nn.Module, original: nn.Module) -> None:
    sliced.num_heads = sliced.qkv.out_features // (3 * original.head_dim)
    sliced.attn_dim = sliced.num_heads * original.head_dim


RULES = (
    LayerRule(TIMM_ATTENTION, units=_qkv_heads, follow=_follow_heads, attributes=("num_heads", "attn_dim")),
)
