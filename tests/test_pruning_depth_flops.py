"""FLOPs of width gates in batches, and of width plus ordered depth gates: exact against fvcore for hard
vectors (a prompt's expert), differentiable and bounded for soft ones."""

from __future__ import annotations

import copy

import pytest
import torch
from automl_prune_prompt.gated_unet import GatedUNet

from automl_prune.data.registry import load_dataset
from automl_prune.flops import count_flops
from automl_prune.pruning import GatedFlops, analyze, remove_blocks, slice_model
from automl_prune.text_to_image.models import TINY, t2i_unet
from automl_prune.text_to_image.task import TextToImageTask
from tests.test_pruning_graph import build, example, random_keep

pytest.importorskip("transformers")

# two levels, one with cross-attention, and the mid block: the FLOPs models build in seconds
TWO_LEVELS = {
    **TINY,
    "block_out_channels": (16, 16),
    "norm_num_groups": 4,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
}


@pytest.fixture(scope="module")
def gated() -> GatedUNet:
    data = load_dataset("digits-captions", size=16)
    torch.manual_seed(0)
    gated = GatedUNet(t2i_unet(data.info, TWO_LEVELS).eval(), TextToImageTask().example_input(data, 1))
    assert gated.full_flops > 0  # builds the FLOPs models (a few seconds) that every test reuses
    return gated


def ordered_vector(gated: GatedUNet, seed: int, depth: int) -> torch.Tensor:
    """A hard vector keeping about 60% of the width units (each group at least one) and the first
    ``depth`` depth blocks, as the router's ordered relaxation makes them."""
    generator = torch.Generator().manual_seed(seed)
    vector = (torch.rand(gated.length, generator=generator) < 0.6).float()
    starts = torch.tensor([0, *gated.width_units[:-1]]).cumsum(0)
    vector[starts] = 1.0
    vector[gated.depth_slice] = (torch.arange(len(gated.depth_blocks)) < depth).float()
    return vector


def test_batched_gates_give_one_count_per_row() -> None:
    model, x = build("resnet20"), example()
    analysis = analyze(model, x)
    flops = GatedFlops(model, analysis, x)
    rows = [{k: v.double() for k, v in random_keep(analysis, seed).items()} for seed in (1, 2, 3)]
    rows[1][analysis.keys[0]] = torch.full((analysis.sizes[0],), 0.3, dtype=torch.float64)  # soft
    batched = {k: torch.stack([row[k] for row in rows]) for k in rows[0]}
    together = flops(batched)
    assert together.shape == (3,)
    torch.testing.assert_close(together, torch.stack([flops(row) for row in rows]))
    fixed = analysis.keys[1]  # a (size,) gate beside (B, size) ones applies to every row
    mixed = flops({**batched, fixed: rows[0][fixed]})
    torch.testing.assert_close(mixed, torch.stack([flops({**row, fixed: rows[0][fixed]}) for row in rows]))


def test_a_wrong_hint_falls_back_to_measuring_the_slopes() -> None:
    model, x = build("unet-group"), example()
    analysis = analyze(model, x)
    wrong = GatedFlops(model, analysis, x)
    wrong._slopes += 7.0
    flops = GatedFlops(model, analysis, x, hint=wrong)
    for seed in (1, 2):
        keep = random_keep(analysis, seed)
        sliced = slice_model(model, x, keep, analysis)
        assert round(float(flops({k: v.float() for k, v in keep.items()}))) == count_flops(sliced, x)


def test_hard_vectors_count_the_extracted_expert_exactly(gated: GatedUNet) -> None:
    assert (
        gated.full_flops
        == count_flops(gated.unet, gated.example)
        == round(float(gated.flops(torch.ones(gated.length))))
    )
    for seed, depth in ((1, 0), (2, 1), (3, len(gated.depth_blocks) - 1), (4, len(gated.depth_blocks))):
        vector = ordered_vector(gated, seed, depth)
        assert round(float(gated.flops(vector))) == count_flops(gated.extract(vector), gated.example)


def test_rows_equal_one_call_each(gated: GatedUNet) -> None:
    rows = torch.stack([ordered_vector(gated, seed, seed % 3) for seed in range(4)])
    rows[1] = rows[1] * 0.6  # soft, still non-increasing depth keeps
    together = gated.flops(rows)
    assert together.shape == (4,)
    torch.testing.assert_close(together, torch.stack([gated.flops(row) for row in rows]))


def test_soft_vectors_lie_between_hard_bounds_and_train_every_entry(gated: GatedUNet) -> None:
    upper = ordered_vector(gated, 5, len(gated.depth_blocks))
    lower = upper * ordered_vector(gated, 6, 1)
    assert (lower < upper).any()
    soft = ((upper + lower) / 2).requires_grad_()
    flops = gated.flops(soft)
    assert float(gated.flops(lower)) < float(flops.detach()) < float(gated.flops(upper))
    flops.backward()
    assert (soft.grad[: gated.depth_slice.start] != 0).all() and (soft.grad[gated.depth_slice] > 0).all()


def test_closed_depth_is_the_unet_without_its_depth_blocks(gated: GatedUNet) -> None:
    vector = torch.ones(gated.length)
    vector[gated.depth_slice] = 0.0
    shallow = remove_blocks(copy.deepcopy(gated.unet), gated.depth_blocks)
    assert round(float(gated.flops(vector))) == count_flops(shallow, gated.example) < gated.full_flops


def test_increasing_depth_keeps_are_refused(gated: GatedUNet) -> None:
    vector = torch.ones(gated.length)
    vector[gated.depth_slice.start] = 0.0
    with pytest.raises(ValueError, match="must not increase"):
        gated.flops(vector)
