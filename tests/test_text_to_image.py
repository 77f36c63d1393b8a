"""The text-to-image task: its text encoders (random and a local CLIP directory), the conditional UNet,
classifier-free guidance in training and sampling, FLOPs per step with both guidance passes, training
that lowers the denoising loss, and the report's Frechet distance and agreement."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch.utils.data import Subset

import automl_prune
from automl_prune.data.base import DataInfo, DataSplits
from automl_prune.data.registry import load_dataset
from automl_prune.diffusion.layers import FF_GROUPS
from automl_prune.errors import ModelError
from automl_prune.flops import count_flops
from automl_prune.models.base import ModelRef
from automl_prune.progress import Progress
from automl_prune.pruning import ChannelGates, GatedFlops, analyze, save_pruned, slice_checked
from automl_prune.text_to_image.models import TINY, t2i_unet
from automl_prune.text_to_image.task import TextToImageTask, caption_ids, caption_states
from automl_prune.text_to_image.text_encoder import encoder_spec, local_encoder, random_encoder, text_encoder
from tests.searches import trial_context

pytest.importorskip("transformers")

CPU = torch.device("cpu")
CAPTIONS = ["a bold upright handwritten seven", "a thin left-leaning handwritten one"]
#: a few steps of a narrow UNet keep every test here to seconds
SMALL = {**TINY, "block_out_channels": (16, 16, 16), "norm_num_groups": 4}


@pytest.fixture(scope="module")
def data() -> DataSplits:
    full = load_dataset("digits-captions", size=16)
    return DataSplits(
        Subset(full.train, range(128)),
        Subset(full.val, range(32)),
        Subset(full.test, range(32)),
        replace(full.info, name="digits-captions-subset"),  # its own cache key for the reference classifier
    )


@pytest.fixture(scope="module")
def task() -> TextToImageTask:
    return TextToImageTask(sample_steps=4, fd_samples=16)


def unet(data: DataSplits, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return t2i_unet(data.info, SMALL)


def test_random_encoder_is_rebuilt_from_its_seed_and_tells_captions_apart() -> None:
    first, second = random_encoder(CAPTIONS), random_encoder(CAPTIONS)
    torch.testing.assert_close(first.encode(CAPTIONS)[0], second.encode(CAPTIONS)[0])
    pooled = first.pooled(CAPTIONS)
    assert pooled.shape == (2, first.width) and not torch.allclose(pooled[0], pooled[1])
    states, mask = first.encode(["a seven", ""])
    assert states.shape == (2, first.max_length, first.width) and mask.sum(1).tolist() == [2, 0]
    assert not any(p.requires_grad for p in first.model.parameters())  # frozen


def test_random_encoder_keeps_hyphenated_words_whole() -> None:
    captions = ["a thin left-leaning handwritten one", "a thin right-leaning handwritten one"]
    ids = random_encoder(captions).tokenizer(captions)["input_ids"]
    assert len(ids[0]) == 5 and ids[0] != ids[1]  # "left-leaning" is one known word, not three unknown


def test_a_local_clip_directory_loads_the_same_encoder(tmp_path: Path) -> None:
    saved = random_encoder(CAPTIONS)
    saved.model.save_pretrained(tmp_path)
    saved.tokenizer.save_pretrained(tmp_path)
    spec = encoder_spec(str(tmp_path))
    loaded = text_encoder({"text_encoder": spec, "captions": CAPTIONS})
    assert spec == {"kind": "local", "path": str(tmp_path.resolve())}
    torch.testing.assert_close(loaded.encode(CAPTIONS)[0][:, : saved.max_length], saved.encode(CAPTIONS)[0])
    with pytest.raises(ModelError, match=r"config\.json not found"):
        local_encoder(tmp_path / "missing")


def test_the_unet_refuses_data_without_captions(data: DataSplits) -> None:
    info = DataInfo("digits", "classification", 1, (16, 16), 10)
    with pytest.raises(ModelError, match="has no captions"):
        t2i_unet(info, SMALL)
    assert t2i_unet(data.info, SMALL).config.cross_attention_dim == text_encoder(data.info.extra).width


def test_training_drops_captions_for_guidance_and_evaluation_never_does(data: DataSplits) -> None:
    batch = next(iter(torch.utils.data.DataLoader(data.train, batch_size=8)))
    table = caption_states(data)
    assert len(table) == len(data.info.extra["captions"]) + 1  # every caption and the empty one
    (kept,) = TextToImageTask().condition(batch, data, CPU, training=False)
    torch.testing.assert_close(kept, table[batch[1]])
    (dropped,) = TextToImageTask(cfg_dropout=1.0).condition(batch, data, CPU, training=True)
    torch.testing.assert_close(dropped, table[-1:].expand(8, -1, -1))


def test_flops_per_step_count_both_guidance_passes(data: DataSplits, task: TextToImageTask) -> None:
    model = unet(data)
    one_call = count_flops(model, task.example_input(data, 1))
    assert task.flops(model, data) == 2 * one_call > 0
    assert "two UNet calls" in task.flops_convention()


def test_guidance_mixes_the_caption_and_empty_predictions(data: DataSplits, task: TextToImageTask) -> None:
    model = unet(data)
    ids = caption_ids(data, "val", 2)
    empty = torch.full_like(ids, len(data.info.extra["captions"]))
    # guidance 0 samples the empty caption, guidance 1 the caption alone
    unconditional = replace(task, guidance=0.0).generate_for(model, data, ids, device=CPU)
    torch.testing.assert_close(
        unconditional, replace(task, guidance=1.0).generate_for(model, data, empty, device=CPU)
    )
    guided = task.generate_for(model, data, ids, device=CPU)
    assert guided.shape == (2, 1, 16, 16) and guided.abs().max() <= 1
    assert not torch.allclose(guided, unconditional)
    torch.testing.assert_close(guided, task.generate_for(model, data, ids, device=CPU))  # seeded


def test_training_lowers_the_validation_denoising_loss(data: DataSplits, task: TextToImageTask) -> None:
    model = unet(data)
    before = task.evaluate(model, data, "val", batch_size=32, device=CPU)["mse"]
    task.train(
        model, data, epochs=3, lr=3e-3, batch_size=32, device=CPU, seed=0, progress=Progress(quiet=True)
    )
    after = task.evaluate(model, data, "val", batch_size=32, device=CPU)["mse"]
    assert after < 0.7 * before


def test_report_gives_frechet_distance_and_agreement_on_unseen_prompts(
    data: DataSplits, task: TextToImageTask
) -> None:
    metrics = task.report(unet(data), data, CPU, Progress(quiet=True))
    assert {"fd_val", "fd_test", "agreement_val", "agreement_test"} <= set(metrics)
    assert all(0 <= metrics[f"agreement_{s}"] <= 1 for s in ("val", "test"))
    assert metrics["fd_val"] > 0


def test_t2i_unet_prunes_heads_feed_forward_groups_and_norm_groups_and_reloads(
    data: DataSplits, task: TextToImageTask, tmp_path: Path
) -> None:
    model = unet(data).eval()
    example = task.example_input(data, 1)
    analysis = analyze(model, example)
    ff = [g for g in analysis if g.key.endswith("ff.net.0.proj")]
    assert ff and all(g.unit == 2 * (g.size // 2) // FF_GROUPS for g in ff)  # a group's rows in both halves
    assert any(g.key.endswith("attn2.to_v") for g in analysis)  # cross-attention heads
    flops = GatedFlops(model, analysis, example)
    generator = torch.Generator().manual_seed(0)
    keep = {
        g.key: (torch.rand(g.units, generator=generator) < 0.5).repeat_interleave(g.unit) for g in analysis
    }
    for g in analysis:  # at least one unit per group
        keep[g.key][: g.unit] = True
    sliced = slice_checked(model, analysis, keep, example, task.example_input(data, 3))
    assert count_flops(sliced, example) == round(float(flops({k: v.double() for k, v in keep.items()})))
    ref = ModelRef("t2i-unet-tiny", {"block_out_channels": [16, 16, 16], "norm_num_groups": 4})
    path = save_pruned(sliced, tmp_path / "t2i", model_ref=ref, info=data.info)
    batch = (torch.randn(2, 1, 16, 16), torch.tensor([3, 700]), caption_states(data)[:2])
    with torch.no_grad():
        torch.testing.assert_close(automl_prune.load(path)(*batch).sample, sliced(*batch).sample)


def test_magnitude_meets_a_budget_in_guided_steps(
    data: DataSplits, task: TextToImageTask, tmp_path: Path
) -> None:
    """The budget is per denoising step with both guidance passes; the strategy's FLOPs model counts one
    UNet call, so it must prune to half of the task's target (the trial, not the FLOPs model, decides)."""
    from automl_prune_magnitude import MagnitudeStrategy

    model = unet(data).eval()
    context = trial_context(model, ModelRef("t2i-unet-tiny"), data, task, tmp_path)
    params = {"target_flops_ratio": 0.5, "criterion": "l1", "scope": "global", "lr": 1e-3}
    params |= {"finetune_epochs": 0, "distill": False, "channel_multiple": 1}
    assert context.call_target_flops(params) == context.target_flops(params) / 2
    candidate = MagnitudeStrategy().run(context, params, {})
    pruned = task.flops(candidate.model, data)
    assert 0.9 * candidate.target_flops <= pruned <= candidate.target_flops == 0.5 * context.base_flops


def test_per_prompt_gates_on_the_conditional_unet(data: DataSplits, task: TextToImageTask) -> None:
    """One gate row per prompt (channels-first convs, channels-last attention and feed-forward) computes
    what each prompt computes alone with its row: the router can run a batch of mixed architectures."""
    model = unet(data).eval()
    analysis = analyze(model, task.example_input(data, 1))
    torch.manual_seed(0)
    rows = {g.key: (torch.rand(2, g.units) < 0.6).float().repeat_interleave(g.unit, 1) for g in analysis}
    batch = (torch.randn(2, 1, 16, 16), torch.tensor([3, 700]), caption_states(data)[:2])
    with ChannelGates(model, analysis) as gates, torch.no_grad():
        gates.set(rows)
        together = model(*batch).sample
        for i in range(2):
            gates.set({k: v[i] for k, v in rows.items()})
            alone = model(*(part[i : i + 1] for part in batch)).sample
            torch.testing.assert_close(together[i : i + 1], alone, rtol=1e-4, atol=1e-5)
