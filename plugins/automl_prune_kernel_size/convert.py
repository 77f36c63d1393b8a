"""Between a plain CNN and its searchable form.

Searchable layers are the ``Conv2d`` layers with an odd square kernel larger than 1x1, dilation 1,
zero padding and "same" padding ``(k - 1) / 2`` (so any odd size keeps the output shape, strided or
not). Pointwise (1x1) convs, such as projection shortcuts and bottleneck reductions, mix channels,
not space, and stay as they are. Conversion works on any registered CNN: the CIFAR ResNets, the plain
CNN, torchvision ResNets and MobileNets (depthwise convs are searched too).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping

import torch
from torch import nn

from automl_prune.api import ModelError
from automl_prune_kernel_size.layers import SizeSearchConv, embed_centre, same_padding_conv


def searchable_layers(model: nn.Module) -> list[str]:
    """Names of the convs whose kernel size can be searched, in forward-definition order."""
    names = []
    for name, m in model.named_modules():
        if type(m) is not nn.Conv2d:
            continue
        k = m.kernel_size
        if (
            k[0] == k[1]
            and k[0] % 2 == 1
            and k[0] > 1
            and m.dilation == (1, 1)
            and m.padding_mode == "zeros"
            and m.padding == ((k[0] - 1) // 2,) * 2
        ):
            names.append(name)
    if not names:
        raise ModelError(
            f"{type(model).__name__} has no conv layer whose kernel size can be searched",
            "kernel-size search needs Conv2d layers with an odd square kernel > 1, dilation 1 and "
            "'same' padding (k - 1) / 2; pick another model or strategy",
        )
    return names


def to_searchable(model: nn.Module, layers: list[str], k_max: int, sharpness: float) -> nn.Module:
    """A copy of ``model`` with each of ``layers`` replaced by a :class:`SizeSearchConv` at ``k_max``
    initialised from its weights (embedded in the centre, or centre-cropped when larger)."""
    searchable = copy.deepcopy(model)
    for name in layers:
        searchable.set_submodule(name, SizeSearchConv(searchable.get_submodule(name), k_max, sharpness))
    return searchable


def to_plain(searchable: nn.Module) -> nn.Module:
    """A plain CNN from a searchable one: every ``SizeSearchConv`` becomes a ``Conv2d`` at its current
    hard size with its current effective weights, so both compute the same function."""
    plain = copy.deepcopy(searchable)
    for name, m in list(plain.named_modules()):
        if isinstance(m, SizeSearchConv):
            plain.set_submodule(name, m.to_conv())
    return plain


def with_kernel_sizes(model: nn.Module, sizes: Mapping[str, int]) -> nn.Module:
    """A copy of ``model`` whose convs named in ``sizes`` have those (odd) kernel sizes, "same" padding,
    their old kernels centre-cropped (or zero-padded) into the new size. Fixed-size baselines use it
    followed by :func:`reinitialise`."""
    out = copy.deepcopy(model)
    for name, k in sizes.items():
        conv = out.get_submodule(name)
        if k % 2 == 0 or k < 1:
            raise ValueError(f"kernel size of {name!r} must be a positive odd integer, got {k}")
        new = same_padding_conv(conv, k).to(conv.weight)
        with torch.no_grad():
            new.weight.copy_(embed_centre(conv.weight.detach(), k))
            if conv.bias is not None:
                new.bias.copy_(conv.bias)
        out.set_submodule(name, new)
    return out


def reinitialise(model: nn.Module, seed: int) -> nn.Module:
    """Train-from-scratch initialisation in place: He (fan-out) convs and linears with zero biases,
    BatchNorm at identity with fresh running statistics. Seeded, so compared models start alike."""
    generator = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_out = m.weight.shape[0] * m.weight[0, 0].numel()
            with torch.no_grad():
                m.weight.copy_(torch.randn(m.weight.shape, generator=generator) * math.sqrt(2 / fan_out))
                if m.bias is not None:
                    m.bias.zero_()
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_parameters()
    return model


def kernel_sizes(model: nn.Module, layers: list[str]) -> dict[str, int]:
    """The kernel size of each of ``layers`` in a plain model."""
    return {name: model.get_submodule(name).kernel_size[0] for name in layers}
