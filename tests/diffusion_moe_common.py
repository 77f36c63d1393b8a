"""What the diffusion-mixture tests share: the tiny UNet on digits 16x16 and its example input."""

from __future__ import annotations

import torch

from automl_prune.api import DataInfo
from automl_prune.models.base import ModelRef
from automl_prune.models.registry import build_model

INFO = DataInfo("digits", "diffusion", 1, (16, 16))
EXAMPLE = (torch.zeros(1, 1, 16, 16), torch.tensor([500]))
UNET = ModelRef("ddpm-unet-tiny")


def dense_unet() -> torch.nn.Module:
    """``ddpm-unet-tiny`` with seeded random weights, in eval mode: the dense model experts come from."""
    torch.manual_seed(0)
    return build_model(UNET, INFO).eval()
