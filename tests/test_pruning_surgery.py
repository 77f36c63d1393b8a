"""Physical slicing: the sliced model computes exactly what the gated (masked) model computes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from automl_prune.pruning import ChannelGates, analyze, hard_keep, slice_checked, slice_model
from automl_prune.pruning.extraction import ieee_fp32
from tests.test_pruning_graph import ZOO, build, example, random_keep


def masked_and_sliced(name: str, seed: int) -> tuple[torch.Tensor, torch.Tensor, nn.Module, dict]:
    model = build(name)
    x = example(batch=2)
    analysis = analyze(model, x[:1])
    keep = random_keep(analysis, seed)
    sliced = slice_model(model, x[:1], keep, analysis)
    with ChannelGates(model, analysis) as gates, torch.no_grad():
        gates.set({k: v.float() for k, v in keep.items()})
        masked = model(x)
    with torch.no_grad():
        return masked, sliced(x), sliced, keep


@pytest.mark.parametrize("name", [*ZOO, "resnet56"])
def test_masked_model_equals_sliced_model(name: str) -> None:
    masked, sliced_out, sliced, _ = masked_and_sliced(name, seed=1)
    with torch.no_grad():
        full = build(name)(example(batch=2))
    assert torch.allclose(masked, sliced_out, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(full, sliced_out, atol=1e-3)  # pruning changed the function
    assert sum(p.numel() for p in sliced.parameters()) < sum(p.numel() for p in build(name).parameters())


def test_sliced_widths_follow_the_keep_masks() -> None:
    _, _, sliced, keep = masked_and_sliced("unet-batch", seed=2)
    kept = {key: int(mask.sum()) for key, mask in keep.items()}
    assert sliced.encoders[0][0].out_channels == kept["encoders.0.0"]
    assert sliced.encoders[0][1].num_features == kept["encoders.0.0"]
    # the last decoder reads the upsampled first decoder output and the first encoder output
    assert sliced.decoders[1][0].in_channels == kept["decoders.0.3"] + kept["encoders.0.3"]
    assert sliced.head.out_channels == 3


def test_groupnorm_keeps_its_group_size_after_slicing() -> None:
    _, _, sliced, keep = masked_and_sliced("unet-group", seed=3)
    for module in sliced.modules():
        if isinstance(module, nn.GroupNorm):
            assert module.num_channels % module.num_groups == 0
    norm, width = sliced.encoders[2][1], int(keep["encoders.2.0"].sum())
    assert (norm.num_channels, norm.num_groups) == (width, width // 16)


def test_an_empty_mask_keeps_one_unit_and_a_split_unit_is_refused() -> None:
    model = build("unet-group")
    analysis = analyze(model, example())
    sliced = slice_model(model, example(), {"encoders.0.0": torch.zeros(16, dtype=torch.bool)}, analysis)
    assert sliced.encoders[0][0].out_channels == 4  # one GroupNorm group
    assert sliced.encoders[1][0].out_channels == 32  # groups left out of `keep` stay whole
    split = torch.ones(16, dtype=torch.bool)
    split[0] = False
    with pytest.raises(ValueError, match="splits a unit"):
        slice_model(model, example(), {"encoders.0.0": split}, analysis)


def test_slice_model_analyses_the_model_itself_when_no_analysis_is_given() -> None:
    model = build("resnet20")
    keep = {"layer1.0.conv1": torch.arange(16) < 5}
    sliced = slice_model(model, example(), keep)
    assert sliced.layer1[0].conv1.out_channels == 5 and sliced.layer1[0].conv2.in_channels == 5
    assert model.layer1[0].conv1.out_channels == 16  # the original is untouched


def test_a_gated_model_cannot_be_sliced_before_its_gates_are_removed() -> None:
    model = build("resnet20")
    analysis = analyze(model, example())
    keep = random_keep(analysis, seed=1)
    with ChannelGates(model, analysis), pytest.raises(RuntimeError, match="remove the ChannelGates"):
        slice_model(model, example(), keep, analysis)
    assert slice_model(model, example(), keep, analysis)(example()).shape == (1, 10)


def test_hard_keep_thresholds_gates_at_one_half() -> None:
    gates = {"a": torch.tensor([0.0, 0.49, 0.5, 1.0], requires_grad=True)}
    assert hard_keep(gates)["a"].tolist() == [False, False, True, True]


def test_ieee_fp32_sets_full_precision_inside_and_restores_it_after_an_error() -> None:
    conv, matmul = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    before = conv.fp32_precision, matmul.fp32_precision
    with pytest.raises(KeyError), ieee_fp32():
        assert (conv.fp32_precision, matmul.fp32_precision) == ("ieee", "ieee")
        raise KeyError
    assert (conv.fp32_precision, matmul.fp32_precision) == before


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (TF32 convolutions)")
@pytest.mark.parametrize("name", ZOO)
def test_slice_checked_passes_on_cuda(name: str) -> None:
    model, x = build(name).cuda().eval(), example(batch=4).cuda()
    analysis = analyze(model, x[:1])
    sliced = slice_checked(model, analysis, random_keep(analysis, 3), x[:1], x)
    assert next(sliced.parameters()).is_cuda
