"""``torchvision:NAME``: any torchvision classification model, untrained (``weights=None``, nothing is
downloaded), with the data's classes and, for other than 3 input channels, a stem conv of the same shape
taking the data's channels. Pretrained weights come from a local file (``--weights``)."""

from __future__ import annotations

from typing import Any

from torch import nn

from automl_prune.data.base import DataInfo
from automl_prune.models.by_name import classifier_classes, unknown_model

LISTING = "torchvision.models.list_models(module=torchvision.models)"


def replace_stem(model: nn.Module, in_channels: int) -> None:
    """Swap the first conv for one with ``in_channels`` inputs and otherwise the same configuration."""
    name, conv = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    parent_name, _, attr = name.rpartition(".")
    stem = nn.Conv2d(
        in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        bias=conv.bias is not None,
    )
    setattr(model.get_submodule(parent_name), attr, stem)


def torchvision_classifier(arch: str, info: DataInfo, **kwargs: Any) -> nn.Module:
    """An untrained torchvision ``arch`` with ``info``'s classes and input channels."""
    import torchvision.models  # heavy: loaded when a torchvision model is built

    model = torchvision.models.get_model(arch, weights=None, num_classes=classifier_classes(info), **kwargs)
    if info.in_channels != 3:
        replace_stem(model, info.in_channels)
    return model


def torchvision_family(info: DataInfo, arch: str, **kwargs: Any) -> nn.Module:
    """``torchvision:ARCH``: the classifier ``arch`` for ``info``; a name torchvision lacks is an error
    naming the closest it has."""
    import torchvision.models

    known = torchvision.models.list_models(module=torchvision.models)
    if arch not in known:
        raise unknown_model("torchvision", arch, known, LISTING)
    return torchvision_classifier(arch, info, **kwargs)
