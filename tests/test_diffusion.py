"""Diffusion UNets in the core: tracing, masked == sliced, exact FLOPs, persistence, the task, a search."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import automl_prune
from automl_prune.data.registry import load_dataset
from automl_prune.diffusion.sample_quality import encoder_for, first_images, frechet_distances
from automl_prune.diffusion.sampling import TRAIN_TIMESTEPS, noise_scheduler, sample, sampler_timesteps
from automl_prune.diffusion.task import DiffusionTask, unit_range
from automl_prune.errors import ModelError, UntrustedCodeError
from automl_prune.evaluation import evaluate_saved, export_saved
from automl_prune.flops import count_flops
from automl_prune.frechet import encode_in_batches, frechet_distance
from automl_prune.models.base import ModelRef
from automl_prune.models.registry import build_model
from automl_prune.pruning import (
    CompositeModel,
    GatedFlops,
    TimestepRouter,
    analyze,
    read_spec,
    save_pruned,
    slice_checked,
)
from automl_prune.search.config import SearchConfig
from automl_prune.search.orchestrator import run_search
from automl_prune.tasks import task_for
from tests.test_pruning_graph import random_keep

pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def digits16():
    return load_dataset("digits", size=16)


def conditional_unet() -> nn.Module:
    """A tiny text-conditioned UNet: self- and cross-attention (8 heads of 4) in a transformer block."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        layers_per_block=1,
        block_out_channels=(32, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=8,
        norm_num_groups=8,
    ).eval()


def attention_heads(model: nn.Module) -> dict[str, int]:
    return {n: m.heads for n, m in model.named_modules() if type(m).__name__ == "Attention"}


def check_prunes_exactly(model: nn.Module, example, batch, seed: int = 1) -> nn.Module:
    """Masked == sliced on ``batch``, and the gated FLOPs model == fvcore on the sliced model."""
    analysis = analyze(model, example)
    flops = GatedFlops(model, analysis, example)
    keep = random_keep(analysis, seed)
    sliced = slice_checked(model, analysis, keep, example, batch)
    assert count_flops(sliced, example) == round(float(flops({k: v.double() for k, v in keep.items()})))
    assert count_flops(sliced, example) < flops.full
    return sliced


def test_unet2d_masked_equals_sliced_heads_included(digits16) -> None:
    task = task_for("ddpm-unet-tiny", "classification")
    model = build_model(ModelRef("ddpm-unet-tiny"), digits16.info).eval()
    analysis = analyze(model, task.example_input(digits16))
    assert not analysis.frozen  # the zoo's widths keep every skip concatenation on the norm grid
    heads = [g for g in analysis if g.key.endswith("to_v")]
    assert heads and all(g.unit == 8 for g in heads)  # whole heads of 8 channels
    batch = (torch.randn(3, 1, 16, 16), torch.tensor([0, 400, 999]))
    sliced = check_prunes_exactly(model, task.example_input(digits16), batch)
    assert min(attention_heads(sliced).values()) < 6 == max(attention_heads(model).values())
    for m in sliced.modules():  # diffusers' attributes follow the new widths
        if type(m).__name__ == "Attention":
            assert m.heads * 8 == m.to_q.out_features == m.inner_dim
        if type(m).__name__ in ("Upsample2D", "Downsample2D"):
            assert m.channels == m.conv.in_channels


def test_conditional_unet_with_cross_attention_prunes_exactly() -> None:
    model = conditional_unet()
    example = (torch.zeros(1, 1, 8, 8), torch.tensor([500]), torch.zeros(1, 4, 16))
    batch = (torch.randn(2, 1, 8, 8), torch.tensor([3, 700]), torch.randn(2, 4, 16))
    sliced = check_prunes_exactly(model, example, batch)
    before, after = attention_heads(model), attention_heads(sliced)
    assert any(after[n] < before[n] for n in before if n.endswith("attn2"))  # cross-attention heads
    assert any(after[n] < before[n] for n in before if n.endswith("attn1"))  # self-attention heads
    frozen = analyze(model, example).frozen
    assert any("LayerNorm" in why for why in frozen.values())  # a transformer's width stays whole


def test_pruned_unet_saves_and_loads_without_pickle(digits16, tmp_path) -> None:
    task = task_for("ddpm-unet-tiny", "classification")
    ref = ModelRef("ddpm-unet-tiny")
    model = build_model(ref, digits16.info).eval()
    batch = (torch.randn(2, 1, 16, 16), torch.tensor([10, 900]))
    sliced = check_prunes_exactly(model, task.example_input(digits16), batch, seed=3)
    path = save_pruned(sliced, tmp_path / "unet", model_ref=ref, info=digits16.info)
    spec = json.loads((path / "spec.json").read_text())
    assert any("heads" in values for values in spec["attributes"].values())
    loaded = automl_prune.load(path)
    assert attention_heads(loaded) == attention_heads(sliced)
    with torch.no_grad():
        assert torch.equal(loaded(*batch).sample, sliced(*batch).sample)


def two_expert_composite(digits16) -> CompositeModel:
    """Two differently pruned tiny UNets: the first serves t < 300, the second the rest."""
    task = task_for("ddpm-unet-tiny", "classification")
    model = build_model(ModelRef("ddpm-unet-tiny"), digits16.info).eval()
    batch = (torch.randn(2, 1, 16, 16), torch.tensor([10, 900]))
    parts = [check_prunes_exactly(model, task.example_input(digits16), batch, seed=s) for s in (3, 4)]
    return CompositeModel(parts, TimestepRouter([0, 300, TRAIN_TIMESTEPS])).eval()


def test_composite_of_two_pruned_unets_saves_and_loads_without_pickle(digits16, tmp_path) -> None:
    composite = two_expert_composite(digits16)
    ref = ModelRef("ddpm-unet-tiny")
    path = save_pruned(composite, tmp_path / "moe", model_ref=ref, info=digits16.info, metadata={"trial": 1})
    assert sorted(p.name for p in path.iterdir()) == ["manifest.json", "part0", "part1"]
    assert not [f for f in path.rglob("*") if f.suffix in (".pt", ".pkl", ".pth")]
    loaded = automl_prune.load(path)
    assert isinstance(loaded, CompositeModel) and loaded.router.boundaries == [0, 300, TRAIN_TIMESTEPS]
    x = torch.randn(4, 1, 16, 16)
    t = torch.tensor([5, 950, 299, 300])  # both experts in one batch, and either side of the boundary
    with torch.no_grad():
        out = loaded(x, t).sample
        assert torch.equal(out, composite(x, t).sample)
        first, second = composite.parts
        assert torch.equal(out[[0, 2]], first(x[[0, 2]], t[[0, 2]]).sample)
        assert torch.equal(out[[1, 3]], second(x[[1, 3]], t[[1, 3]]).sample)
    assert read_spec(path)["metadata"] == {"trial": 1}


def test_composite_flops_average_the_sampler_steps_each_part_serves(digits16) -> None:
    task = DiffusionTask()
    composite = two_expert_composite(digits16)
    steps = torch.tensor(sampler_timesteps(task.sampler, task.sample_steps))
    low = int((steps < 300).sum())
    flops = [task.flops(part, digits16) for part in composite.parts]
    assert flops[0] != flops[1] and 0 < low < len(steps)
    expected = (low * flops[0] + (len(steps) - low) * flops[1]) / len(steps)
    assert task.flops(composite, digits16) == round(expected)


def test_composite_is_evaluated_and_exported_one_file_per_part(digits16, tmp_path) -> None:
    path = save_pruned(
        two_expert_composite(digits16),
        tmp_path / "moe",
        model_ref=ModelRef("ddpm-unet-tiny"),
        info=digits16.info,
        metadata={"data": "digits", "data_args": {"size": 16}},
    )
    report = evaluate_saved(path, data=None, split="test", device="cpu", batch_size=128)
    assert report["flops"] == DiffusionTask().flops(automl_prune.load(path), digits16)
    assert report["mse"] > 0 and report["fd_test"] > 0 and "sampling_ms" in report
    manifest = export_saved(path, "torchscript", tmp_path / "export")
    assert json.loads(manifest.read_text())["parts"] == ["part0.pt", "part1.pt"]
    part = torch.jit.load(str(tmp_path / "export" / "part1.pt"))
    x, t = torch.randn(1, 1, 16, 16), torch.tensor([700])
    with torch.no_grad():
        expected = automl_prune.load(path).parts[1](x, t).sample
        assert torch.allclose(part(x, t), expected, atol=1e-5)


def test_frechet_distance_on_a_classifier_of_the_data_separates_noise_from_digits(digits16) -> None:
    encoder = encoder_for(digits16, torch.device("cpu"), _quiet())
    assert "plain-cnn classifier trained on digits" in encoder.name
    extra = digits16.info.extra
    real = {
        s: encode_in_batches(encoder, unit_range(first_images(digits16, s, 64), extra))
        for s in ("val", "test")
    }
    between_splits = frechet_distance(real["val"], real["test"])
    untrained = build_model(ModelRef("ddpm-unet-tiny"), digits16.info)
    fd = frechet_distances(
        untrained,
        encoder,
        real,
        shape=(1, 16, 16),
        sampler_name="ddim",
        steps=4,
        device=torch.device("cpu"),
        n=64,
    )
    assert fd["fd_samples"] == 64
    assert fd["fd_val"] > 5 * between_splits and fd["fd_test"] > 5 * between_splits


def test_denoising_metric_is_deterministic_and_per_interval(digits16) -> None:
    task = DiffusionTask()
    model = build_model(ModelRef("ddpm-unet-tiny"), digits16.info)
    first = task.evaluate(model, digits16, "val", batch_size=128, device=torch.device("cpu"))
    again = task.evaluate(model, digits16, "val", batch_size=64, device=torch.device("cpu"))
    assert first == pytest.approx(again, rel=1e-5)
    assert first["neg_mse"] == -first["mse"]
    quarters = [k for k in first if k.startswith("mse_t")]
    assert quarters == ["mse_t0_249", "mse_t250_499", "mse_t500_749", "mse_t750_999"]


def test_training_lowers_the_denoising_loss(digits16) -> None:
    task = DiffusionTask()
    torch.manual_seed(0)
    model = build_model(ModelRef("ddpm-unet-tiny"), digits16.info)
    cpu = torch.device("cpu")
    before = task.evaluate(model, digits16, "val", batch_size=128, device=cpu)["mse"]
    task.train(model, digits16, epochs=2, lr=2e-3, batch_size=64, device=cpu, seed=0, progress=_quiet())
    after = task.evaluate(model, digits16, "val", batch_size=128, device=cpu)["mse"]
    assert after < 0.7 * before


class _Oracle(nn.Module):
    """Predicts the true noise of known clean images for t >= 500 and zeros below: the loss is ~1 at
    small t and exactly 0 from t = 500 on."""

    def __init__(self, x0: torch.Tensor) -> None:
        super().__init__()
        self.x0, self.alphas = x0, noise_scheduler().alphas_cumprod
        self.w = nn.Parameter(torch.ones(()))

    def forward(self, noisy: torch.Tensor, t: torch.Tensor):
        a = self.alphas[t].view(-1, 1, 1, 1)
        eps = (noisy - a.sqrt() * self.x0) / (1 - a).sqrt()
        return type("Out", (), {"sample": torch.where(t.view(-1, 1, 1, 1) >= 500, eps, 0 * eps) * self.w})


def test_taylor_timesteps_stop_where_the_loss_becomes_small() -> None:
    task = DiffusionTask()
    x0 = torch.rand(4, 1, 8, 8) * 2 - 1
    kept = task.taylor_timesteps(_Oracle(x0), x0, torch.randn(4, 1, 8, 8))
    assert kept == list(range(0, 500, task.taylor_stride))


def test_taylor_loss_has_gradients_from_the_low_noise_steps(digits16) -> None:
    task = DiffusionTask()
    torch.manual_seed(0)
    model = build_model(ModelRef("ddpm-unet-tiny"), digits16.info)
    batch = next(iter(torch.utils.data.DataLoader(digits16.train, batch_size=8)))
    task.loss(model, batch, digits16, torch.device("cpu")).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_sampling_is_seeded_and_in_range(digits16) -> None:
    model = build_model(ModelRef("ddpm-unet-tiny"), digits16.info)
    a = sample(model, (2, 1, 16, 16), steps=4, seed=7)
    assert torch.equal(a, sample(model, (2, 1, 16, 16), steps=4, seed=7))
    assert a.abs().max() <= 1
    assert sampler_timesteps("ddim", 4) == sorted(sampler_timesteps("ddim", 4), reverse=True)
    assert len(sampler_timesteps("ddpm", 10)) == 10 and max(sampler_timesteps("ddpm", 10)) < TRAIN_TIMESTEPS


def test_flops_are_per_step_and_a_run_multiplies_them(digits16) -> None:
    task = DiffusionTask()
    model = build_model(ModelRef("ddpm-unet-tiny"), digits16.info)
    per_step = task.flops(model, digits16)
    expected = {"flops_per_sampling_run": float(per_step * task.sample_steps)}
    assert task.cost(model, digits16, per_step) == expected
    assert "per denoising step" in task.flops_convention()


def test_diffusers_directory_is_loaded_with_its_weights_and_pruned(digits16, tmp_path) -> None:
    """A user's save_pretrained directory: its config builds the model, its weights are the base model
    (no training), and a magnitude search prunes it."""
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    unet = build_model(ModelRef("ddpm-unet-tiny"), digits16.info)
    assert isinstance(unet, UNet2DModel)
    unet.save_pretrained(tmp_path / "unet")
    out = tmp_path / "run"
    config = SearchConfig(
        strategy="magnitude",
        model=f"diffusers:{tmp_path / 'unet'}",
        data="digits",
        data_args={"size": 16},
        out=str(out),
        trials=1,
        max_flops="0.5",
        overrides=["finetune_epochs=1", "criterion=l1", "target_flops_ratio=0.5"],
        quiet=True,
    )
    result = run_search(config)
    (trial,) = result.trials
    assert trial.state == "complete", trial.error
    assert trial.flops <= 0.5 * result.info.base["flops"]
    assert result.info.base["n_params"] == sum(p.numel() for p in unet.parameters())
    saved = DiffusionTask().evaluate(unet, digits16, "val", batch_size=64, device=torch.device("cpu"))
    assert result.info.base["quality"] == pytest.approx(saved["neg_mse"], rel=1e-5)  # not retrained
    with pytest.raises(UntrustedCodeError, match="trust-model-code"):  # its spec names a directory
        automl_prune.load(trial.model_dir)
    pruned = automl_prune.load(trial.model_dir, trust_code=True)
    assert sum(p.numel() for p in pruned.parameters()) < result.info.base["n_params"]
    assert any(p.name.startswith("diffusion_samples_") for p in (out / "figures").iterdir())


def test_diffusers_directory_errors_name_the_problem(digits16, tmp_path) -> None:
    with pytest.raises(ModelError, match=r"config\.json not found"):
        build_model(ModelRef(f"diffusers:{tmp_path}"), digits16.info)
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    with pytest.raises(ModelError, match="not one of UNet2DModel"):
        build_model(ModelRef(f"diffusers:{tmp_path}"), digits16.info)


def _quiet():
    from automl_prune.progress import Progress

    return Progress(quiet=True)
