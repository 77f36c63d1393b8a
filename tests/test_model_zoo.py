"""Every model family users bring, built by name and pruned: masked == sliced, FLOPs model == fvcore,
save/load round trip, ONNX export parity; and the ``torchvision:NAME`` / ``timm:NAME`` families' errors."""

from __future__ import annotations

import builtins
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from automl_prune.data.base import DataInfo
from automl_prune.errors import ModelError
from automl_prune.flops import count_flops
from automl_prune.models.base import ModelRef
from automl_prune.models.registry import build_model, outside_code
from automl_prune.plugins import get_plugins
from automl_prune.pruning import (
    GatedFlops,
    analyze,
    export_onnx,
    load_pruned,
    masked_outputs,
    save_pruned,
    slice_model,
)
from automl_prune.pruning.graph import DependencyAnalysis
from tests.test_pruning_graph import nontrivial_norms, random_keep

pytest.importorskip("timm")

RGB = DataInfo(name="rgb32", task="classification", in_channels=3, image_size=(32, 32), num_classes=10)
GRAY = DataInfo(name="gray32", task="classification", in_channels=1, image_size=(32, 32), num_classes=10)
SMALL_VIT = {"img_size": 32, "patch_size": 8, "depth": 2}


def small_regnet(num_classes: int = 10) -> nn.Module:
    """A two-stage RegNetY (group width 8, squeeze-excitation), as torchvision builds regnet_y_400mf."""
    from torchvision.models.regnet import BlockParams, RegNet

    params = BlockParams.from_init_params(depth=3, w_0=16, w_a=8.0, w_m=2.0, group_width=8, se_ratio=0.25)
    return RegNet(params, num_classes=num_classes)


def small_vgg(num_classes: int = 10) -> nn.Module:
    """VGG's shape in small: conv-BN-ReLU stages, max-pooling, flattened into a linear classifier."""
    return nn.Sequential(
        *torchvision.models.vgg.make_layers([16, "M", 32, 32, "M"], batch_norm=True),
        nn.Flatten(),
        nn.Linear(32 * 8 * 8, 64),
        nn.ReLU(),
        nn.Dropout(),
        nn.Linear(64, num_classes),
    )


CHECKS = ("masked", "flops", "saved", "onnx")


@dataclass(frozen=True)
class Family:
    ref: ModelRef
    info: DataInfo = RGB
    heads: tuple[str, ...] = field(default=())  # attention modules whose head count must follow
    slow: tuple[str, ...] = field(default=())  # checks that take seconds here: run with the slow tests


TORCHVISION_VIT = ModelRef(
    "torchvision.models.vision_transformer:VisionTransformer",
    {"image_size": 32, "patch_size": 8, "num_layers": 2, "num_heads": 4, "hidden_dim": 64, "mlp_dim": 128},
)
FAMILIES = {
    "resnet18": Family(ModelRef("torchvision:resnet18"), slow=("onnx",)),
    "mobilenet_v2": Family(ModelRef("torchvision:mobilenet_v2"), slow=("onnx",)),
    "mobilenet_v3-gray": Family(ModelRef("torchvision:mobilenet_v3_small"), GRAY, slow=("onnx",)),
    "efficientnet_b0": Family(ModelRef("torchvision:efficientnet_b0"), slow=("flops", "onnx")),
    "convnext_atto-timm": Family(ModelRef("timm:convnext_atto")),
    "regnet-small": Family(ModelRef("tests.test_model_zoo:small_regnet")),
    "vgg-small": Family(ModelRef("tests.test_model_zoo:small_vgg")),
    "vit_tiny-timm": Family(ModelRef("timm:vit_tiny_patch16_224", SMALL_VIT), heads=("blocks.0.attn",)),
    "deit_tiny-timm": Family(ModelRef("timm:deit_tiny_patch16_224", SMALL_VIT), heads=("blocks.1.attn",)),
    "vit-torchvision": Family(TORCHVISION_VIT),
    # the full-size torchvision/timm builds of the families above, at 32x32
    "convnext_tiny": Family(ModelRef("torchvision:convnext_tiny"), slow=CHECKS),
    "regnet_y_400mf": Family(ModelRef("torchvision:regnet_y_400mf"), slow=CHECKS),
    "vgg11_bn": Family(ModelRef("torchvision:vgg11_bn"), slow=CHECKS),
    "efficientnet_b0-timm": Family(ModelRef("timm:efficientnet_b0"), slow=CHECKS),
}


def families(check: str) -> list:
    """Every family, those for which ``check`` is slow marked so."""
    return [
        pytest.param(name, marks=pytest.mark.slow) if check in family.slow else name
        for name, family in FAMILIES.items()
    ]


@dataclass
class Pruned:
    family: Family
    model: nn.Module
    analysis: DependencyAnalysis
    keep: dict[str, torch.Tensor]
    sliced: nn.Module
    example: torch.Tensor
    batch: torch.Tensor


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def images(info: DataInfo, batch: int) -> torch.Tensor:
    return torch.randn(batch, info.in_channels, *info.image_size, generator=torch.Generator().manual_seed(1))


def prune(name: str, seed: int = 1) -> Pruned:
    family = FAMILIES[name]
    torch.manual_seed(0)
    model = nontrivial_norms(build_model(family.ref, family.info))
    for key, weight in model.named_parameters():
        if key.endswith(("gamma", "layer_scale")):  # ConvNeXt's layer scales start at 1e-6: make them count
            weight.data.uniform_(0.5, 1.5)
        elif weight.dim() > 1 and not weight.any():  # torchvision's ViT head starts at zero
            nn.init.normal_(weight, std=0.1)
    example, batch = images(family.info, 1), images(family.info, 3)
    analysis = analyze(model, example)
    keep = random_keep(analysis, seed)
    sliced = slice_model(model, example, keep, analysis).eval()
    return Pruned(family, model, analysis, keep, sliced, example, batch)


@pytest.fixture(scope="module")
def pruned(request: pytest.FixtureRequest) -> Pruned:
    """The family named by the test's parameter, pruned at random (shared by the module's tests)."""
    return prune(request.param)


@pytest.mark.parametrize("pruned", families("masked"), indirect=True)
def test_masked_equals_sliced(pruned: Pruned) -> None:
    with torch.no_grad():
        out = pruned.sliced(pruned.batch)
        full = pruned.model(pruned.batch)
    masked = masked_outputs(pruned.model, pruned.analysis, pruned.keep, pruned.batch)
    assert torch.allclose(masked, out, atol=1e-4, rtol=1e-4), (masked - out).abs().max()
    assert not torch.allclose(full, out, atol=1e-3)  # pruning changed the function
    assert n_params(pruned.sliced) < n_params(pruned.model)


@pytest.mark.parametrize("pruned", [n for n, f in FAMILIES.items() if f.heads], indirect=True)
def test_attention_heads_follow_the_pruned_width(pruned: Pruned) -> None:
    for name in pruned.family.heads:
        before, after = pruned.model.get_submodule(name), pruned.sliced.get_submodule(name)
        kept = int(pruned.keep[f"{name}.qkv"].sum()) // (3 * before.head_dim)
        assert after.num_heads == kept < before.num_heads
        assert after.attn_dim == kept * before.head_dim == after.proj.in_features


@pytest.mark.parametrize("pruned", families("flops"), indirect=True)
def test_flops_model_equals_fvcore_on_the_sliced_model(pruned: Pruned) -> None:
    flops = GatedFlops(pruned.model, pruned.analysis, pruned.example)
    predicted = round(float(flops({k: v.double() for k, v in pruned.keep.items()})))
    assert count_flops(pruned.sliced, pruned.example) == predicted < flops.full


@pytest.mark.parametrize("pruned", families("saved"), indirect=True)
def test_save_load_round_trip(pruned: Pruned, tmp_path: Path) -> None:
    path = save_pruned(
        pruned.sliced, tmp_path / "model", model_ref=pruned.family.ref, info=pruned.family.info
    )
    # trust is needed only for a module:factory; torchvision:NAME and timm:NAME load without it
    loaded = load_pruned(path, trust_code=outside_code(pruned.family.ref) is not None)
    with torch.no_grad():
        assert torch.equal(loaded(pruned.batch), pruned.sliced(pruned.batch))
    for name in pruned.family.heads:
        assert loaded.get_submodule(name).num_heads == pruned.sliced.get_submodule(name).num_heads


@pytest.mark.parametrize("pruned", families("onnx"), indirect=True)
def test_onnx_export_matches(pruned: Pruned, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    path = export_onnx(pruned.sliced, pruned.example, tmp_path / "model.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: pruned.batch.numpy()})
    with torch.no_grad():
        expected = pruned.sliced(pruned.batch)
    assert torch.allclose(torch.from_numpy(out), expected, atol=1e-4, rtol=1e-4)


def test_grouped_convs_keep_their_groups_and_lose_channels_alike() -> None:
    sliced = prune("regnet-small").sliced
    grouped = [m for m in sliced.modules() if isinstance(m, nn.Conv2d) and 1 < m.groups < m.out_channels]
    assert grouped
    original = {m.groups for m in small_regnet().modules() if isinstance(m, nn.Conv2d) and m.groups > 1}
    assert {m.groups for m in grouped} <= original
    assert any(m.out_channels // m.groups < 8 for m in grouped)  # group width 8 was cut


def test_layer_norm_widths_and_embeddings_stay_whole() -> None:
    analysis = prune("vit_tiny-timm").analysis
    assert any("pos_embed" in why for why in analysis.frozen.values())
    assert not any(m.module == "blocks.0.norm1" for group in analysis for m in group.members)


def test_library_families_build_for_the_data() -> None:
    gray = build_model(ModelRef("torchvision:efficientnet_b0"), GRAY)
    assert gray.features[0][0].in_channels == 1 and gray.classifier[-1].out_features == 10
    vit = build_model(ModelRef("timm:vit_tiny_patch16_224", {**SMALL_VIT, "depth": 1}), GRAY)
    assert vit.patch_embed.proj.in_channels == 1 and vit.head.out_features == 10 and len(vit.blocks) == 1
    alias = build_model(ModelRef("resnet18"), GRAY)  # the registered names are the same builds
    assert type(alias) is type(build_model(ModelRef("torchvision:resnet18"), GRAY))
    assert alias.conv1.in_channels == 1
    assert outside_code(ModelRef("timm:convnext_atto")) is None  # a library name runs no user code
    assert outside_code(ModelRef("torchvision:resnet18")) is None
    assert outside_code(TORCHVISION_VIT) is not None


@pytest.mark.parametrize(
    ("name", "close"),
    [
        ("torchvision:efficientnet_b9", "torchvision:efficientnet_b7"),
        ("timm:convnext_atoo", "timm:convnext_atto"),
    ],
)
def test_unknown_library_names_suggest_close_ones(name: str, close: str) -> None:
    with pytest.raises(ModelError) as error:
        build_model(ModelRef(name), RGB)
    assert "has no classifier" in error.value.problem
    assert close in error.value.fix and "list_models" in error.value.fix


@pytest.mark.parametrize("family", ["torchvision", "timm"])
def test_a_family_without_a_name_asks_for_one(family: str) -> None:
    with pytest.raises(ModelError, match="is a family of models") as error:
        build_model(ModelRef(family), RGB)
    assert f"--model {family}:NAME" in error.value.fix


def test_timm_preprocessing_comes_from_its_pretrained_config_without_building() -> None:
    preprocessing = get_plugins().models.entry("timm").meta["preprocessing"]
    config = preprocessing("convnext_atto")
    assert config["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert config["std"] == pytest.approx([0.229, 0.224, 0.225])
    assert config["input_size"] == [3, 224, 224] and config["interpolation"] == "bicubic"
    assert config["crop_pct"] == pytest.approx(0.875)
    assert preprocessing("vit_tiny_patch16_224")["mean"] == pytest.approx([0.5, 0.5, 0.5])


@pytest.fixture
def without_timm(monkeypatch: pytest.MonkeyPatch) -> None:
    """timm as if it were not installed: every import of it fails."""
    for module in [m for m in sys.modules if m == "timm" or m.startswith("timm.")]:
        monkeypatch.delitem(sys.modules, module)
    real_import = builtins.__import__

    def guarded(name: str, *args, **kwargs):
        if name == "timm" or name.startswith("timm."):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", guarded)


def test_a_saved_timm_model_names_the_extra_when_timm_is_missing(tmp_path: Path, request) -> None:
    ref = ModelRef("timm:vit_tiny_patch16_224", {**SMALL_VIT, "depth": 1})
    model = build_model(ref, RGB)
    path = save_pruned(model, tmp_path / "model", model_ref=ref, info=RGB)
    request.getfixturevalue("without_timm")
    for attempt in (lambda: load_pruned(path), lambda: build_model(ref, RGB)):
        with pytest.raises(ModelError) as error:
            attempt()
        assert "needs timm" in error.value.problem
        assert "automl-prune[timm]" in error.value.fix


class Gray2Rgb(nn.Module):
    """A user's model that adapts the channels itself before a 3-channel stem."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stem(x.expand(-1, 3, -1, -1))


def test_a_user_model_on_data_with_other_channels_is_named_as_such() -> None:
    from automl_prune.search.validate import check_input_channels

    gray = images(GRAY, 1)
    with pytest.raises(ModelError) as error:
        check_input_channels(torchvision.models.resnet18(), gray, GRAY, "my.models:net")
    assert (
        "my.models:net takes 3-channel images" in error.value.problem
        and "'gray32' has 1 channel" in error.value.problem
    )
    assert "torchvision:NAME" in error.value.fix and "channels=3" in error.value.fix
    check_input_channels(Gray2Rgb(), gray, GRAY, "adapts")  # runs: no error
    check_input_channels(build_model(ModelRef("torchvision:resnet18"), GRAY), gray, GRAY, "adapted")


class NormAct(nn.BatchNorm2d):
    """A library's norm subclass holding more than its widths (timm's BatchNormAct2d holds its act)."""

    def __init__(self, channels: int, act: str = "relu") -> None:
        super().__init__(channels)
        self.act = nn.SiLU() if act == "silu" else nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(super().forward(x))


def norm_act_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3), NormAct(8, act="silu"), nn.Conv2d(8, 4, 3), nn.Flatten())


def test_a_subclass_of_a_norm_is_resized_in_place_and_keeps_what_it_holds(tmp_path: Path) -> None:
    ref = ModelRef("tests.test_model_zoo:norm_act_net")
    model = nontrivial_norms(build_model(ref, RGB))
    example = images(RGB, 1)
    sliced = slice_model(model, example, random_keep(analyze(model, example), 1))
    assert sliced[1].num_features < 8
    loaded = load_pruned(save_pruned(sliced, tmp_path / "model", model_ref=ref, info=RGB), trust_code=True)
    assert isinstance(loaded[1], NormAct) and isinstance(loaded[1].act, nn.SiLU)
    assert loaded[1].num_features == sliced[1].num_features
    with torch.no_grad():
        assert torch.equal(loaded(images(RGB, 2)), sliced.eval()(images(RGB, 2)))
