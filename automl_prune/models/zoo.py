"""The built-in model zoo, registered through the ``register_models`` hook like any plugin's.

Every factory takes the data's :class:`DataInfo` first, so the same name fits digits, Fashion-MNIST
or CIFAR. torchvision classifiers are built untrained (``weights=None``, nothing is downloaded); their
classifier gets ``info.num_classes`` outputs, and for data with other than 3 channels their stem conv is
replaced by one of the same shape taking ``info.in_channels``. Their ImageNet stem still downsamples
4x, which suits 32x32 and larger inputs better than 16x16. Pretrained weights are loaded by the caller
from a local file (``load_weights``).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from torch import nn

from automl_prune.data.base import DataInfo
from automl_prune.errors import ModelError
from automl_prune.hookspecs import hookimpl
from automl_prune.models.cifar_resnet import resnet20, resnet56
from automl_prune.models.plain_cnn import PlainCNN
from automl_prune.models.unet import SmallUNet

TORCHVISION_CLASSIFIERS = ("resnet18", "resnet34", "resnet50", "mobilenet_v2", "mobilenet_v3_small")


def _num_classes(info: DataInfo) -> int:
    if info.num_classes < 1:
        raise ModelError(
            f"a classifier needs classes, but dataset {info.name!r} ({info.task}) has none",
            "use a classification dataset, or a model for its task (`automl-prune plugins` lists them)",
        )
    return info.num_classes


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

    model = getattr(torchvision.models, arch)(weights=None, num_classes=_num_classes(info), **kwargs)
    if info.in_channels != 3:
        replace_stem(model, info.in_channels)
    return model


def small_image_classifier(builder: Callable[..., nn.Module], info: DataInfo, **kwargs: Any) -> nn.Module:
    """A small-image classifier (CIFAR ResNet, plain CNN) with ``info``'s classes and channels."""
    return builder(num_classes=_num_classes(info), in_channels=info.in_channels, **kwargs)


def unet(info: DataInfo, **kwargs: Any) -> nn.Module:
    """A SmallUNet from the data's input channels to its target channels (``extra["out_channels"]``)."""
    out_channels = info.extra.get("out_channels", info.in_channels)
    return SmallUNet(in_channels=info.in_channels, out_channels=out_channels, **kwargs)


@hookimpl
def register_models(register: Any) -> None:
    for name, builder, depth in (("resnet20", resnet20, 20), ("resnet56", resnet56, 56)):
        register(
            name,
            partial(small_image_classifier, builder),
            task="classification",
            description=f"CIFAR ResNet-{depth} (He et al. 2016), widths w/2w/4w (width=16)",
        )
    register(
        "plain-cnn",
        partial(small_image_classifier, PlainCNN),
        task="classification",
        description="plain VGG-style CNN: 3 stages of 2 conv-BN-ReLU (widths 16/32/64), max-pool between",
    )
    for arch in TORCHVISION_CLASSIFIERS:
        register(
            arch,
            partial(torchvision_classifier, arch),
            task="classification",
            description=f"torchvision {arch}, untrained; stem adapted to the data's channels",
        )
    register(
        "unet",
        unet,
        task="image-translation",
        description="small U-Net with concatenation skips (base=16, depth=3), tanh output",
    )
