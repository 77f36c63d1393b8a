"""A composite of pruned conditional UNets routed by prompt (APTP's inference): the prompt router's
noise-free decision, the composite call, saving and loading the router's tensors, guided sampling with
each prompt's own expert, and FLOPs averaged over the routed validation prompts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import automl_prune
from automl_prune.data.base import DataSplits
from automl_prune.data.registry import load_dataset
from automl_prune.errors import CheckpointError
from automl_prune.evaluation import export_saved
from automl_prune.models.base import ModelRef
from automl_prune.pruning import CompositeModel, PromptRouter, analyze, relax, save_pruned, slice_checked
from automl_prune.text_to_image.models import TINY, t2i_unet
from automl_prune.text_to_image.task import TextToImageTask, caption_ids, caption_states

pytest.importorskip("transformers")

CPU = torch.device("cpu")
SMALL = {**TINY, "block_out_channels": (16, 16, 16), "norm_num_groups": 4}
REF = ModelRef("t2i-unet-tiny", {"block_out_channels": [16, 16, 16], "norm_num_groups": 4})
TASK = TextToImageTask(sample_steps=3, fd_samples=16)


@pytest.fixture(scope="module")
def data() -> DataSplits:
    return load_dataset("digits-captions", size=16)


def prompts(data: DataSplits) -> torch.Tensor:
    """The token states of the validation prompts the task's FLOPs average over."""
    return caption_states(data)[caption_ids(data, "val", TASK.fd_samples)]


def split_router(data: DataSplits) -> tuple[PromptRouter, torch.Tensor]:
    """A hand-set router: prompts whose mean token state projects below the median on a fixed direction
    go to part 1 (width gate closed, depth gate open), the others to part 0; and those expected parts."""
    projection = torch.randn(caption_states(data).shape[-1], generator=torch.Generator().manual_seed(0))
    scores = prompts(data).mean(dim=1) @ projection
    cut = float(scores.median()) + 1e-4  # off every prompt's score
    weight = torch.stack([projection, -projection])  # L = 2: a width gate, then a one-block depth part
    codes = torch.eye(2)  # code 0 keeps the width gate only, code 1 the depth gate only
    router = PromptRouter(weight, torch.tensor([-cut, cut]), codes, [1, 1], slice(1, 2), offset=0.0)
    return router, (scores < cut).long()


def pruned(model: nn.Module, data: DataSplits, seed: int) -> nn.Module:
    """``model`` with about half of every channel group's units removed at random."""
    example = TASK.example_input(data, 1)
    analysis = analyze(model, example)
    generator = torch.Generator().manual_seed(seed)
    keep = {
        g.key: (torch.rand(g.units, generator=generator) < 0.5).repeat_interleave(g.unit) for g in analysis
    }
    for g in analysis:  # at least one unit per group
        keep[g.key][: g.unit] = True
    return slice_checked(model, analysis, keep, example, example).eval()


@pytest.fixture(scope="module")
def composite(data: DataSplits) -> CompositeModel:
    torch.manual_seed(0)
    base = t2i_unet(data.info, SMALL).eval()
    parts = [pruned(base, data, seed) for seed in (1, 2)]
    return CompositeModel(parts, split_router(data)[0]).eval()


def test_noise_free_relaxation_decides_each_gate_and_keeps_depth_cumulative() -> None:
    logits = torch.tensor([[0.5, -0.5, -1.0, 2.0], [-0.1, 3.0, 1.0, 2.0]])
    gates = relax(logits, [slice(2, 4)], offset=0.0, hard=True, noise=False)
    assert gates.tolist() == [[1, 0, 0, 0], [0, 1, 1, 1]]  # a closed depth gate closes all after it
    soft = relax(logits, [slice(2, 4)], offset=0.0, noise=False)  # no noise: the same on every call
    assert torch.equal(relax(logits, [slice(2, 4)], offset=0.0, noise=False), soft)
    assert torch.equal((soft[:, :2] >= 0.5).float(), gates[:, :2])
    trained = logits.clone().requires_grad_(True)  # the decision passes the soft gradient back
    relax(trained, [slice(2, 4)], offset=0.0, hard=True, noise=False).sum().backward()
    assert trained.grad is not None and bool((trained.grad != 0).all())


def test_prompts_go_to_the_expected_parts_and_each_part_serves_its_rows(data, composite) -> None:
    router, expected = split_router(data)
    states = prompts(data)
    assert torch.equal(router.parts_of(states), expected) and 0 < expected.sum() < len(expected)
    x, t = torch.randn(len(states), 1, 16, 16), torch.randint(0, 1000, (len(states),))
    with torch.no_grad():
        together = composite(x, t, encoder_hidden_states=states).sample
        for part in (0, 1):
            rows = torch.nonzero(expected == part).flatten()
            alone = composite.parts[part](x[rows], t[rows], states[rows]).sample
            torch.testing.assert_close(together[rows], alone, rtol=1e-4, atol=1e-5)


def test_a_saved_composite_loads_with_its_routing_and_outputs(data, composite, tmp_path: Path) -> None:
    path = save_pruned(composite, tmp_path / "aptp", model_ref=REF, info=data.info)
    assert sorted(p.name for p in path.iterdir()) == ["manifest.json", "part0", "part1", "router.safetensors"]
    loaded = automl_prune.load(path)
    assert (
        isinstance(loaded.router, PromptRouter) and loaded.router.to_config() == composite.router.to_config()
    )
    states = prompts(data)
    assert torch.equal(loaded.router.parts_of(states), composite.router.parts_of(states))
    batch = (torch.randn(len(states), 1, 16, 16), torch.full((len(states),), 500), states)
    with torch.no_grad():
        assert torch.equal(loaded(*batch).sample, composite(*batch).sample)
    exported = export_saved(path, "torchscript", tmp_path / "export").parent
    assert (exported / "router.safetensors").read_bytes() == (path / "router.safetensors").read_bytes()

    (path / "router.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match=r"router\.safetensors") as error:
        automl_prune.load(path)
    assert "save the model again" in error.value.fix
    (path / "router.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"router\.safetensors"):
        automl_prune.load(path)


class Opaque(nn.Module):
    """The composite behind a module the task does not recognise: one guided call for all prompts."""

    def __init__(self, composite: CompositeModel) -> None:
        super().__init__()
        self.composite = composite

    def forward(self, *args: torch.Tensor) -> object:
        return self.composite(*args)


def test_guided_sampling_gives_each_prompt_its_own_experts_sample(data, composite) -> None:
    ids = caption_ids(data, "val", TASK.fd_samples)
    _, expected = split_router(data)
    grouped = TASK.generate_for(composite, data, ids, device=CPU)
    for part in (0, 1):
        rows = torch.nonzero(expected == part).flatten()
        alone = TASK.generate_for(composite.parts[part], data, ids, device=CPU)
        torch.testing.assert_close(grouped[rows], alone[rows], rtol=1e-4, atol=1e-4)
    # through the composite in one call, the empty caption's rows would all take one expert
    assert not torch.allclose(TASK.generate_for(Opaque(composite), data, ids, device=CPU), grouped)


def test_flops_are_the_routed_count_weighted_mean_of_the_parts(data, composite) -> None:
    _, expected = split_router(data)
    counts = torch.bincount(expected, minlength=2).tolist()
    flops = [TASK.flops(part, data) for part in composite.parts]
    assert flops[0] != flops[1]
    mean = (counts[0] * flops[0] + counts[1] * flops[1]) / sum(counts)
    assert TASK.flops(composite, data) == round(mean)
