"""The Stable Diffusion 2.1 UNet architecture (built from its config, no weights exist here) is analysed,
gated per prompt and sliced exactly like the tiny text-to-image UNet: the same code serves both.
Slow: 865M parameters on a CPU."""

from __future__ import annotations

import pytest
import torch

from automl_prune.pruning import ChannelGates, analyze, slice_checked

pytest.importorskip("diffusers")

#: stabilityai/stable-diffusion-2-1's unet/config.json (its public architecture facts); in diffusers'
#: naming, attention_head_dim lists the number of heads per stage (64-channel heads)
SD21 = {
    "act_fn": "silu",
    "attention_head_dim": [5, 10, 20, 20],
    "block_out_channels": [320, 640, 1280, 1280],
    "cross_attention_dim": 1024,
    "down_block_types": [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "upcast_attention": True,
    "use_linear_projection": True,
}
LATENT = 8  # 64 px images: the smallest latent the three downsamplings allow


@pytest.mark.slow
def test_sd21_unet_prunes_heads_feed_forward_and_norm_groups_masked_equals_sliced() -> None:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    model = UNet2DConditionModel(sample_size=LATENT, **SD21).eval()
    assert 8.6e8 < sum(p.numel() for p in model.parameters()) < 8.7e8  # SD 2.1's 865M
    tokens = torch.randn(2, 77, 1024)
    example = (torch.zeros(1, 4, LATENT, LATENT), torch.tensor([500]), tokens[:1])
    analysis = analyze(model, example)
    keys = analysis.keys
    assert any(k.endswith("attn2.to_v") for k in keys) and any(k.endswith("ff.net.0.proj") for k in keys)
    heads = [analysis[k] for k in keys if k.endswith("attn1.to_v")]
    assert heads and all(g.unit == 64 for g in heads)
    generator = torch.Generator().manual_seed(0)
    rows = {}
    for g in analysis:
        units = torch.rand(2, g.units, generator=generator) < 0.5
        units[:, 0] = True  # a group keeps a unit
        rows[g.key] = units.float().repeat_interleave(g.unit, 1)
    batch = (torch.randn(2, 4, LATENT, LATENT), torch.tensor([10, 900]), tokens)
    with ChannelGates(model, analysis) as gates, torch.no_grad():
        gates.set(rows)
        together = model(*batch).sample
    for i in range(2):  # each prompt's architecture, sliced, computes its row of the gated batch
        keep = {k: v[i] > 0.5 for k, v in rows.items()}
        sliced = slice_checked(model, analysis, keep, example, tuple(part[i : i + 1] for part in batch))
        with torch.no_grad():
            torch.testing.assert_close(
                sliced(*(p[i : i + 1] for p in batch)).sample, together[i : i + 1], rtol=1e-3, atol=1e-4
            )
        assert sum(p.numel() for p in sliced.parameters()) < 0.8 * sum(p.numel() for p in model.parameters())


@pytest.mark.slow
def test_sd21_unet_is_routed_per_prompt_and_its_experts_sliced_with_depth() -> None:
    """APTP's gated UNet, router and expert extraction on the SD 2.1 architecture: codes with closed
    width units and depth blocks route prompts and slice into experts equal to the gated UNet."""
    from automl_prune_prompt.experts import extract_experts
    from automl_prune_prompt.gated_unet import GatedUNet
    from automl_prune_prompt.training import PromptArchitectures
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    model = UNet2DConditionModel(sample_size=LATENT, **SD21).eval()
    tokens = torch.randn(4, 77, 1024)
    gated = GatedUNet(model, (torch.zeros(1, 4, LATENT, LATENT), torch.tensor([500]), tokens[:1]))
    assert gated.depth_blocks[-1].startswith("mid_block") and len(gated.depth_blocks) == 5
    architectures = PromptArchitectures(gated, embedding_dim=1024, n_codes=2)
    with torch.no_grad():
        logits = torch.randn(2, gated.length, generator=torch.Generator().manual_seed(1)) - 2.0
        logits[:, gated.depth_slice] = torch.tensor([[9.0] * (len(gated.depth_blocks) - 2) + [-9.0, -9.0]])
        architectures.codes.weight.copy_(logits)
    codes = architectures.code_gates()
    assert bool((codes[:, gated.depth_slice].sum(1) == len(gated.depth_blocks) - 2).all())
    parts = architectures.router().parts_of(tokens)
    assert parts.shape == (4,) and set(parts.tolist()) <= {0, 1}
    check = (torch.randn(1, 4, LATENT, LATENT), torch.tensor([300]), tokens[:1])
    experts = extract_experts(gated, codes, check)  # refused unless each equals the gated UNet
    dense = sum(p.numel() for p in model.parameters())
    assert all(sum(p.numel() for p in e.parameters()) < 0.8 * dense for e in experts)
