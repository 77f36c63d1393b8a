"""The diffusion mixture's elastic expert: nested widths, skippable blocks, masked == sliced, exact FLOPs,
sandwich training and saving an extracted expert."""

from __future__ import annotations

from itertools import pairwise

import pytest
import torch
from automl_prune_diffusion_moe.supernet import ElasticUNet, ExpertConfig, sandwich_loss, train_supernet

from automl_prune.api import AutomlPruneError, count_flops, noise_scheduler
from automl_prune.pruning import SkippedBlock, load_pruned, read_spec, save_pruned
from tests.diffusion_moe_common import EXAMPLE, INFO, UNET, dense_unet

pytest.importorskip("diffusers")

BATCH = (torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(1)), torch.tensor([3, 420, 999]))
DEPTHS = (4, 1)
#: masked == sliced and FLOPs are checked on these: whole, depth only, width only, both, the smallest.
CHECKED = [ExpertConfig(4, 1.0), ExpertConfig(1, 1.0), ExpertConfig(4, 0.75), ExpertConfig(1, 0.5)]


@pytest.fixture(scope="module")
def dense() -> torch.nn.Module:
    return dense_unet()


@pytest.fixture(scope="module")
def supernet(dense) -> ElasticUNet:
    return ElasticUNet(dense, EXAMPLE, depths=DEPTHS).eval()


def test_smaller_widths_keep_subsets_of_larger_widths_channels(supernet) -> None:
    assert supernet.widths == (1.0, 0.75, 0.5, 0.25)
    for large, small in pairwise(supernet.widths):
        for group in supernet.analysis:
            big, little = supernet.keep(large)[group.key], supernet.keep(small)[group.key]
            assert not (little & ~big).any(), (group.key, small, large)  # nested
            assert little.sum() <= big.sum()
            units = little.view(group.units, group.unit)
            assert (units.all(1) | ~units.any(1)).all()  # whole GroupNorm groups / heads
    kept = {w: sum(int(m.sum()) for m in supernet.keep(w).values()) for w in supernet.widths}
    assert kept[0.25] < kept[0.5] < kept[0.75] < kept[1.0] == sum(supernet.analysis.sizes)


def test_depth_skips_the_last_shape_preserving_blocks_of_each_stage(supernet) -> None:
    assert supernet.skipped(4) == []
    assert supernet.skipped(1) == [
        "down_blocks.1.attentions.0",
        "mid_block.attentions.0",
        "mid_block.resnets.1",
        "up_blocks.1.attentions.0",
        "up_blocks.1.attentions.1",
    ]
    # up blocks' resnets take the skip concatenation (96 -> 48 channels): never skippable
    assert not [b for b in supernet.skippable if b.startswith("up_blocks") and "resnets" in b]
    assert "down_blocks.0.resnets.0" in supernet.skippable


def test_masked_supernet_equals_the_extracted_expert(supernet) -> None:
    for config in CHECKED:
        supernet.set_config(config)
        expert = supernet.extract(config).eval()
        skipped = [n for n, m in expert.named_modules() if isinstance(m, SkippedBlock)]
        assert set(skipped) == set(supernet.skipped(config.depth))
        with torch.no_grad():
            masked, sliced = supernet(*BATCH).sample, expert(*BATCH).sample
        torch.testing.assert_close(sliced, masked, rtol=1e-4, atol=1e-5)
    with torch.no_grad():  # the configurations really differ
        supernet.set_config(supernet.largest())
        whole = supernet(*BATCH).sample
        supernet.set_config(ExpertConfig(1, 1.0))
        assert (supernet(*BATCH).sample - whole).abs().max() > 1e-3


def test_flops_are_fvcore_on_the_expert_and_monotone(supernet, dense) -> None:
    for config in CHECKED:
        assert supernet.flops(config) == count_flops(supernet.extract(config), EXAMPLE)
    flops = {c: supernet.flops(c) for c in supernet.configs()}
    for depth in supernet.depths:
        by_width = [flops[ExpertConfig(depth, w)] for w in supernet.widths]
        assert by_width == sorted(by_width, reverse=True) and by_width[-1] < by_width[0]
    for width in supernet.widths:
        assert flops[ExpertConfig(4, width)] > flops[ExpertConfig(1, width)]
    assert flops[supernet.smallest()] < 0.1 * flops[supernet.largest()]
    assert flops[supernet.largest()] == count_flops(dense, EXAMPLE)


def test_configurations_outside_the_options_are_refused(supernet) -> None:
    with pytest.raises(AutomlPruneError, match="not a configuration"):
        supernet.set_config(ExpertConfig(2, 1.0))
    assert len(supernet.configs()) == 8 and supernet.configs()[0] == supernet.largest()


def test_sandwich_training_lowers_the_loss_and_leaves_the_teacher(dense) -> None:
    torch.manual_seed(0)
    supernet = ElasticUNet(dense, EXAMPLE, depths=DEPTHS)
    generator = torch.Generator().manual_seed(2)
    # flat grey images: the noise is what differs from the image's level, learnable in a few steps
    images = (torch.rand(8, 1, 1, 1, generator=generator) * 2 - 1).expand(8, 1, 16, 16).clone()
    noise = torch.randn(images.shape, generator=generator)
    timesteps = torch.randint(0, 300, (8,), generator=generator)
    configs = (supernet.largest(), supernet.smallest(), ExpertConfig(1, 0.5))
    teacher = {k: v.clone() for k, v in dense.state_dict().items()}

    def loss() -> float:
        with torch.no_grad():
            return float(sandwich_loss(supernet, dense, images, noise, timesteps, configs, noise_scheduler()))

    before = loss()
    losses = train_supernet(supernet, dense, images, (0, 300), steps=12, lr=2e-3, batch_size=8)
    assert len(losses) == 12
    assert loss() < 0.8 * before  # seeded: 1.07 -> 0.64
    assert all(torch.equal(v, teacher[k]) for k, v in dense.state_dict().items())
    with pytest.raises(AutomlPruneError, match="interval"):
        train_supernet(supernet, dense, images, (300, 300), steps=1)


def test_extracted_expert_saves_and_loads(supernet, tmp_path) -> None:
    config = ExpertConfig(1, 0.5)
    expert = supernet.extract(config).eval()
    path = save_pruned(expert, tmp_path / "expert", model_ref=UNET, info=INFO)
    recorded = read_spec(path)["modules"]
    assert {n for n, m in recorded.items() if m["type"] == "SkippedBlock"} == set(supernet.skipped(1))
    loaded = load_pruned(path).eval()
    with torch.no_grad():
        assert torch.equal(loaded(*BATCH).sample, expert(*BATCH).sample)
