"""Channel-group analysis on the test zoo; the zoo and its helpers are shared by the test_pruning_* files."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
import torch_pruning as tp
import torchvision
from torch import nn

from automl_prune.models.cifar_resnet import cifar_resnet, resnet20, resnet56
from automl_prune.models.unet import SmallUNet
from automl_prune.pruning import DependencyAnalysis, analyze
from automl_prune.pruning.graph import NORMS

ZOO: dict[str, Callable[[], nn.Module]] = {
    "resnet20": resnet20,
    "resnet18": lambda: torchvision.models.resnet18(num_classes=10),
    "mobilenet_v2": lambda: torchvision.models.mobilenet_v2(num_classes=10),
    "unet-batch": lambda: SmallUNet(norm="batch"),
    "unet-group": lambda: SmallUNet(norm="group"),
}
BIG = {"resnet56": resnet56}


def build(name: str) -> nn.Module:
    """A zoo model in eval mode whose norms have non-trivial statistics and affine parameters."""
    torch.manual_seed(0)
    return nontrivial_norms({**ZOO, **BIG}[name]())


def nontrivial_norms(model: nn.Module) -> nn.Module:
    """``model`` in eval mode with random norm statistics and affine parameters.

    With the defaults (mean 0, var 1, weight 1, bias 0) a norm maps a zeroed channel to zero, so a gate
    placed before the norm would pass the masked == sliced test by luck; these norms do not.
    """
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
        if isinstance(m, NORMS) and getattr(m, "weight", None) is not None:
            m.weight.data.uniform_(0.5, 1.5)
        if isinstance(m, NORMS) and getattr(m, "bias", None) is not None:
            m.bias.data.normal_(0, 0.2)
    return model.eval()


def example(batch: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def random_keep(analysis: DependencyAnalysis, seed: int) -> dict[str, torch.Tensor]:
    """Keep about half of each group's units at random, and at least one."""
    generator = torch.Generator().manual_seed(seed)
    keep = {}
    for group in analysis:
        units = torch.rand(group.units, generator=generator) < 0.5
        units[torch.randint(group.units, (1,), generator=generator)] = True
        keep[group.key] = units.repeat_interleave(group.unit)
    return keep


@pytest.mark.parametrize(
    ("name", "output_layer"),
    [("resnet20", "fc"), ("mobilenet_v2", "classifier.1"), ("unet-batch", "head")],
)
def test_output_layers_are_never_grouped(name: str, output_layer: str) -> None:
    analysis = analyze(build(name), example())
    assert output_layer not in analysis.keys
    assert all(
        not (m.module == output_layer and m.side == "out") for group in analysis for m in group.members
    )


def test_resnet20_groups_tie_residual_stages_and_gate_after_batchnorm() -> None:
    analysis = analyze(build("resnet20"), example())
    # stem + 3 residual stage groups are shared; each of the 9 blocks has its own inner group
    assert len(analysis) == 9 + 3
    stage3 = analysis["layer3.0.shortcut.0"]
    outs = {m.module for m in stage3.members if m.side == "out"}
    assert {"layer3.0.conv2", "layer3.1.conv2", "layer3.2.conv2", "layer3.0.bn2"} <= outs
    assert ("fc", "in") in {(m.module, m.side) for m in stage3.members}
    gated = {p.module for group in analysis for p in group.gate_points}
    modules = dict(analysis.model.named_modules())
    assert gated and all(isinstance(modules[name], nn.BatchNorm2d) for name in gated)


def test_a_frozen_model_has_the_same_groups_and_stays_frozen() -> None:
    frozen = build("resnet20").requires_grad_(False)
    frozen.fc.weight.requires_grad_(True)  # partly frozen: only the frozen ones change and come back
    assert analyze(frozen, example()).keys == analyze(build("resnet20"), example()).keys
    assert [p.requires_grad for p in frozen.parameters()].count(True) == 1


def test_unet_concat_consumers_get_offset_channels() -> None:
    analysis = analyze(build("unet-batch"), example())
    # decoders.1.0 reads cat([up(decoder 0 output: 32 ch), encoder 0 output: 16 ch])
    skip = {m.module: m for m in analysis["encoders.0.3"].members if m.side == "in"}["decoders.1.0"]
    up = {m.module: m for m in analysis["decoders.0.3"].members if m.side == "in"}["decoders.1.0"]
    assert skip.idxs == tuple(range(32, 48)) and skip.channels == tuple(range(16))
    assert up.idxs == tuple(range(32)) and up.channels == tuple(range(32))


def test_groupnorm_groups_are_the_unit() -> None:
    analysis = analyze(build("unet-group"), example())
    assert [(g.size, g.unit) for g in analysis][:3] == [(16, 4), (16, 4), (32, 8)]
    assert all(g.units == 4 for g in analysis)


def test_groups_that_would_split_a_groupnorm_group_stay_whole() -> None:
    class Split(nn.Module):
        """A GroupNorm of 3-channel groups over the concatenation of 5 and 7 conv channels."""

        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 5, 1), nn.Conv2d(3, 7, 1)
            self.norm = nn.GroupNorm(4, 12)
            self.head = nn.Conv2d(12, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.norm(torch.cat([self.a(x), self.b(x)], 1)))

    analysis = analyze(Split(), torch.randn(1, 3, 4, 4))
    assert analysis.keys == []
    assert set(analysis.frozen) == {"a", "b"}
    assert all("split the groups of GroupNorm 'norm'" in why for why in analysis.frozen.values())


def test_keys_are_stable_across_deep_copies_and_ignored_layers_are_kept() -> None:
    model = build("resnet20")
    analysis = analyze(model, example())
    assert analyze(copy.deepcopy(model), example()).keys == analysis.keys
    fewer = analyze(model, example(), ignored_layers=[model.layer1[0].conv1])
    assert set(fewer.keys) == set(analysis.keys) - {"layer1.0.conv1"}


def test_importance_scores_every_channel_with_torch_pruning_criteria() -> None:
    model = build("unet-group")
    analysis = analyze(model, example())
    scores = analysis.importance(tp.importance.GroupMagnitudeImportance(p=1, normalizer=None))
    assert {k: len(v) for k, v in scores.items()} == dict(zip(analysis.keys, analysis.sizes, strict=True))
    with torch.no_grad():
        model.encoders[0][0].weight[3].zero_()  # channel 3 of the first group loses its L1 mass
    rescored = analysis.importance(tp.importance.GroupMagnitudeImportance(p=1, normalizer=None))
    assert rescored["encoders.0.0"][3] < scores["encoders.0.0"][3]
    assert torch.equal(rescored["decoders.0.0"], scores["decoders.0.0"])
    model(example()).square().mean().backward()
    taylor = analysis.importance(tp.importance.TaylorImportance())
    assert set(taylor) == set(analysis.keys) and all(torch.isfinite(t).all() for t in taylor.values())
    assert len(analysis.importance(tp.importance.RandomImportance())["encoders.2.0"]) == 64


def test_cifar_resnet_depth_must_be_6n_plus_2() -> None:
    with pytest.raises(ValueError, match="6n\\+2"):
        cifar_resnet(21)
