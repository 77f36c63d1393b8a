"""The built-in model zoo, registered through the ``register_models`` hook like any plugin's.

Every factory takes the data's :class:`DataInfo` first, so the same name fits digits, Fashion-MNIST
or CIFAR. The families ``torchvision:NAME`` and ``timm:NAME`` build any classifier of those libraries
untrained (nothing is downloaded) with the data's classes and input channels
(:mod:`~automl_prune.models.torchvision_models`, :mod:`~automl_prune.models.timm_models`); a few
torchvision names are also registered plainly (``resnet18`` is ``torchvision:resnet18``). Their ImageNet
stems still downsample 4x or more, which suits 32x32 and larger inputs better than 16x16. Pretrained
weights are loaded by the caller from a local file (``load_weights``). The layer rules of timm's
attention (whole heads) are registered here too (:mod:`~automl_prune.models.attention_rules`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from torch import nn

from automl_prune.data.base import DataInfo
from automl_prune.hookspecs import hookimpl
from automl_prune.models.by_name import classifier_classes
from automl_prune.models.cifar_resnet import resnet20, resnet56
from automl_prune.models.plain_cnn import PlainCNN
from automl_prune.models.timm_models import timm_family, timm_preprocessing
from automl_prune.models.torchvision_models import torchvision_classifier, torchvision_family
from automl_prune.models.unet import SmallUNet

TORCHVISION_CLASSIFIERS = ("resnet18", "resnet34", "resnet50", "mobilenet_v2", "mobilenet_v3_small")


def small_image_classifier(builder: Callable[..., nn.Module], info: DataInfo, **kwargs: Any) -> nn.Module:
    """A small-image classifier (CIFAR ResNet, plain CNN) with ``info``'s classes and channels."""
    return builder(num_classes=classifier_classes(info), in_channels=info.in_channels, **kwargs)


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
        "torchvision",
        torchvision_family,
        task="classification",
        by_name=True,
        description="torchvision:NAME, any torchvision classifier, untrained; stem adapted to the data",
    )
    register(
        "timm",
        timm_family,
        task="classification",
        by_name=True,
        preprocessing=timm_preprocessing,
        description="timm:NAME, any timm model, untrained, for the data's classes and channels (extra: timm)",
    )
    register(
        "unet",
        unet,
        task="image-translation",
        description="small U-Net with concatenation skips (base=16, depth=3), tanh output",
    )


@hookimpl
def register_layer_rules(register: Any) -> None:
    from automl_prune.models.attention_rules import RULES

    for rule in RULES:
        register(rule)
