"""The APTP gated conditional UNet: the layout of an architecture vector, per-prompt rows, depth dropped
from the middle of the U outwards, and masked == sliced for width and depth gates together."""

from __future__ import annotations

import pytest
import torch
from automl_prune_prompt.gated_unet import GatedUNet

from automl_prune.data.registry import load_dataset
from automl_prune.text_to_image.models import TINY, t2i_unet
from automl_prune.text_to_image.task import TextToImageTask, caption_states

pytest.importorskip("transformers")

SMALL = {**TINY, "block_out_channels": (16, 16, 16), "norm_num_groups": 4}


@pytest.fixture(scope="module")
def gated() -> tuple[GatedUNet, tuple[torch.Tensor, ...]]:
    data = load_dataset("digits-captions", size=16)
    torch.manual_seed(0)
    unet = t2i_unet(data.info, SMALL).eval()
    gated = GatedUNet(unet, TextToImageTask().example_input(data, 1))
    batch = (torch.randn(2, 1, 16, 16), torch.tensor([3, 700]), caption_states(data)[:2])
    return gated, batch


def hard_vector(gated: GatedUNet, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    vector = (torch.rand(gated.length, generator=generator) < 0.6).float()
    start = 0
    for units in gated.width_units:  # every group keeps a unit
        vector[start] = 1.0
        start += units
    return vector


def test_layout_and_depth_order(gated) -> None:
    unet, _ = gated
    assert unet.length == sum(unet.head_sizes) == len(unet.unit_widths)
    assert unet.depth_blocks[-1].startswith("mid_block")  # dropped first
    assert unet.depth_blocks[0].startswith(("down_blocks.0", "up_blocks.2"))  # outermost, dropped last
    assert len(set(unet.depth_blocks)) == len(unet.depth_blocks) >= 3


def test_open_gates_are_the_dense_unet_and_hard_gates_equal_the_sliced_expert(gated) -> None:
    unet, batch = gated
    with torch.no_grad():
        dense = unet.unet(*batch).sample
        with unet.gated(torch.ones(unet.length)) as model:
            torch.testing.assert_close(model(*batch).sample, dense)
        for seed in (1, 2):
            vector = hard_vector(unet, seed)
            assert (vector[unet.depth_slice] == 0).any()  # some blocks dropped
            with unet.gated(vector) as model:
                masked = model(*batch).sample
            expert = unet.extract(vector).eval()
            torch.testing.assert_close(expert(*batch).sample, masked, rtol=1e-4, atol=1e-5)
            assert sum(p.numel() for p in expert.parameters()) < sum(
                p.numel() for p in unet.unet.parameters()
            )


def test_one_row_per_prompt(gated) -> None:
    unet, batch = gated
    rows = torch.stack([hard_vector(unet, 3), hard_vector(unet, 4)])
    with torch.no_grad():
        with unet.gated(rows) as model:
            together = model(*batch).sample
        for i in range(2):
            with unet.gated(rows[i]) as model:
                alone = model(*(part[i : i + 1] for part in batch)).sample
            torch.testing.assert_close(together[i : i + 1], alone, rtol=1e-4, atol=1e-5)


def test_depth_gates_get_gradient(gated) -> None:
    unet, batch = gated
    vector = torch.full((unet.length,), 0.7, requires_grad=True)
    with unet.gated(vector) as model:
        model(*batch).sample.square().mean().backward()
    assert vector.grad is not None and (vector.grad[unet.depth_slice] != 0).all()
