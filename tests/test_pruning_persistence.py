"""Saving pruned models without pickle, loading them back, and exporting them."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import onnx
import pytest
import torch
from onnx.reference import ReferenceEvaluator
from torch import nn

from automl_prune.data.base import DataInfo
from automl_prune.errors import CheckpointError
from automl_prune.models.base import ModelRef
from automl_prune.pruning import (
    analyze,
    export_onnx,
    export_torchscript,
    load_pruned,
    read_spec,
    save_pruned,
    slice_model,
)
from tests.test_pruning_graph import build, example, random_keep

CIFAR = DataInfo(name="cifar-like", task="classification", in_channels=3, image_size=(32, 32), num_classes=10)
PAIRS = DataInfo(name="pairs", task="image-translation", in_channels=3, image_size=(32, 32))
RESNET20 = ModelRef("automl_prune.models.cifar_resnet:resnet20", {"num_classes": 10})
UNET_GROUP = ModelRef("automl_prune.models.unet:SmallUNet", {"norm": "group"})


def pruned(name: str, seed: int = 1) -> nn.Module:
    model = build(name)
    return slice_model(model, example(), random_keep(analyze(model, example()), seed))


def outputs(model: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(example(batch=2))


@pytest.mark.parametrize(
    ("name", "ref", "info"),
    [
        ("resnet20", RESNET20, CIFAR),
        ("resnet20", ModelRef("resnet20"), CIFAR),  # a registry name, built for the data
        ("unet-group", UNET_GROUP, PAIRS),
    ],
)
def test_round_trip_gives_identical_outputs(tmp_path: Path, name: str, ref: ModelRef, info: DataInfo) -> None:
    model = pruned(name)
    path = save_pruned(model, tmp_path / "model", model_ref=ref, info=info, metadata={"budget": 0.5})
    loaded = load_pruned(path, trust_code=True)
    assert torch.equal(outputs(loaded), outputs(model))
    assert read_spec(path)["metadata"] == {"budget": 0.5}


def test_the_spec_is_json_and_the_weights_are_safetensors(tmp_path: Path) -> None:
    model = pruned("unet-group")
    path = save_pruned(model, tmp_path / "model", model_ref=UNET_GROUP, info=PAIRS)
    assert sorted(p.name for p in path.iterdir()) == ["model.safetensors", "spec.json"]
    spec = json.loads((path / "spec.json").read_text())
    assert spec["model_ref"] == UNET_GROUP.to_dict() and spec["data_info"]["image_size"] == [32, 32]
    norm = model.encoders[0][1]
    assert spec["modules"]["encoders.0.1"] == {
        "type": "GroupNorm",
        "num_groups": norm.num_groups,
        "num_channels": norm.num_channels,
        "eps": 1e-5,
        "affine": True,
    }
    assert spec["modules"]["head"]["out_channels"] == 3
    assert not {"pool", "up", "encoders.0"} & set(spec["modules"])  # unchanged modules are not recorded
    raw = (path / "model.safetensors").read_bytes()
    (header_size,) = struct.unpack("<Q", raw[:8])  # safetensors: a length, a JSON header, raw tensor bytes
    assert json.loads(raw[8 : 8 + header_size])
    assert b"\x80\x04" not in raw[:2] and not raw.startswith(b"PK")  # neither a pickle nor a torch zip


def test_dropped_blocks_are_recorded_as_identity(tmp_path: Path) -> None:
    model = build("resnet20")
    model.layer2[2] = nn.Identity()
    path = save_pruned(model, tmp_path / "model", model_ref=RESNET20, info=CIFAR)
    assert read_spec(path)["modules"] == {"layer2.2": {"type": "Identity"}}
    assert torch.equal(outputs(load_pruned(path, trust_code=True)), outputs(model))


def test_missing_or_corrupt_files_raise_checkpoint_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"spec\.json not found"):
        load_pruned(tmp_path / "nowhere", trust_code=True)
    path = save_pruned(pruned("resnet20"), tmp_path / "model", model_ref=RESNET20, info=CIFAR)
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="cannot load") as error:
        load_pruned(path, trust_code=True)
    assert "save the model again" in error.value.fix
    weights.unlink()
    with pytest.raises(CheckpointError, match="cannot load"):
        load_pruned(path, trust_code=True)
    (path / "spec.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_pruned(path, trust_code=True)


def test_weights_of_another_architecture_are_refused(tmp_path: Path) -> None:
    first = save_pruned(pruned("resnet20", seed=1), tmp_path / "a", model_ref=RESNET20, info=CIFAR)
    second = save_pruned(pruned("resnet20", seed=2), tmp_path / "b", model_ref=RESNET20, info=CIFAR)
    (first / "model.safetensors").write_bytes((second / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="cannot load"):
        load_pruned(first, trust_code=True)


def test_saving_is_atomic(tmp_path: Path) -> None:
    target = tmp_path / "model"
    first = pruned("resnet20", seed=1)
    save_pruned(first, target, model_ref=RESNET20, info=CIFAR, metadata={"trial": 1})
    with pytest.raises(CheckpointError, match="JSON"):
        save_pruned(first, target, model_ref=RESNET20, info=CIFAR, metadata={"trial": object()})
    deeper = ModelRef("automl_prune.models.cifar_resnet:resnet56")
    with pytest.raises(CheckpointError, match="rebuilt"):
        save_pruned(first, target, model_ref=deeper, info=CIFAR)
    assert read_spec(target)["metadata"] == {"trial": 1}  # the failed saves left the first one intact
    second = pruned("resnet20", seed=2)
    save_pruned(second, target, model_ref=RESNET20, info=CIFAR, metadata={"trial": 2})
    assert read_spec(target)["metadata"] == {"trial": 2}
    assert torch.equal(outputs(load_pruned(target, trust_code=True)), outputs(second))
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no temporary directories left behind


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")  # deprecated in torch 2.14, still supported
def test_torchscript_export_loads_and_matches(tmp_path: Path) -> None:
    model = pruned("unet-group")
    path = export_torchscript(model, example(), tmp_path / "model.pt")
    assert torch.allclose(torch.jit.load(str(path))(example(batch=2)), outputs(model), atol=1e-5)


def test_onnx_export_is_valid_and_matches(tmp_path: Path) -> None:
    """Numerics are checked with onnx's reference evaluator (onnxruntime is not a dependency)."""
    model = pruned("resnet20")
    path = export_onnx(model, example(), tmp_path / "model.onnx")
    onnx.checker.check_model(str(path), full_check=True)
    session = ReferenceEvaluator(str(path))
    (result,) = session.run(None, {session.input_names[0]: example().numpy()})
    assert torch.allclose(torch.from_numpy(result), outputs(model)[:1], atol=1e-4)
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_onnx_export_takes_any_batch_size(tmp_path: Path) -> None:
    """Exported at batch 1, the graph's batch axis is dynamic: batch 8 matches the torch model."""
    model = pruned("resnet20")
    path = export_onnx(model, example(), tmp_path / "model.onnx")
    graph = onnx.load(str(path)).graph
    for value in [*graph.input, *graph.output]:
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch", value.name
    session = ReferenceEvaluator(str(path))
    batch = torch.randn(8, *example().shape[1:], generator=torch.Generator().manual_seed(0))
    (result,) = session.run(None, {session.input_names[0]: batch.numpy()})
    with torch.no_grad():
        expected = model.eval()(batch)
    assert result.shape[0] == 8
    assert torch.allclose(torch.from_numpy(result), expected, atol=1e-4)


def test_onnx_export_of_a_model_with_several_inputs_takes_any_batch_size(tmp_path: Path) -> None:
    class TwoInputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.embed = nn.Embedding(10, 4)

        def forward(self, x: torch.Tensor, t: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"out": self.conv(x) + self.embed(t)[:, :, None, None]}

    model = TwoInputs()
    path = export_onnx(model, (torch.zeros(1, 3, 8, 8), torch.full((1,), 5)), tmp_path / "two.onnx")
    assert model.training  # its mode is restored
    graph = onnx.load(str(path)).graph
    assert [v.type.tensor_type.shape.dim[0].dim_param for v in [*graph.input, *graph.output]] == ["batch"] * 3
    session = ReferenceEvaluator(str(path))
    x, t = torch.randn(8, 3, 8, 8), torch.arange(8)
    (result,) = session.run(None, dict(zip(session.input_names, [x.numpy(), t.numpy()], strict=True)))
    with torch.no_grad():
        expected = model.eval()(x, t)["out"]
    assert torch.allclose(torch.from_numpy(result), expected, atol=1e-5)


def _ordinary_modes(tmp_path: Path) -> tuple[int, int]:
    """The modes ``open`` and ``mkdir`` give under the current umask."""
    (tmp_path / "probe-dir").mkdir()
    (tmp_path / "probe-file").write_text("")
    modes = (tmp_path / "probe-file").stat().st_mode & 0o777, (tmp_path / "probe-dir").stat().st_mode & 0o777
    (tmp_path / "probe-file").unlink()
    (tmp_path / "probe-dir").rmdir()
    return modes


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_saved_models_and_exports_get_ordinary_permissions(tmp_path: Path, umask: int) -> None:
    import os

    from automl_prune.io import atomic_write_text

    old = os.umask(umask)
    try:
        file_mode, dir_mode = _ordinary_modes(tmp_path)
        model = pruned("resnet20")
        saved = save_pruned(model, tmp_path / "model", model_ref=RESNET20, info=CIFAR)
        exported = export_onnx(model, example(), tmp_path / "model.onnx")
        written = atomic_write_text(tmp_path / "notes" / "a.json", "{}")
    finally:
        os.umask(old)
    assert saved.stat().st_mode & 0o777 == dir_mode
    for file in [*saved.iterdir(), exported, written]:
        assert file.stat().st_mode & 0o777 == file_mode, file


class Scale(nn.Module):
    """A per-channel scale: a layer type the toolbox does not know, as a plugin might prune one."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.weight = nn.Parameter(torch.linspace(0.5, 1.5, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight.view(1, -1, 1, 1)


def scaled_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3), Scale(8), nn.Conv2d(8, 4, 1))


def test_a_layer_rule_makes_a_plugin_layer_type_rebuildable(tmp_path: Path, monkeypatch) -> None:
    from automl_prune.plugins import get_plugins
    from automl_prune.pruning.layers import LayerRule

    model = scaled_net()
    keep = [0, 2, 3, 7]
    with torch.no_grad():
        narrow = nn.Sequential(nn.Conv2d(3, 4, 3), Scale(4), nn.Conv2d(4, 4, 1))
        narrow[0].weight.copy_(model[0].weight[keep])
        narrow[0].bias.copy_(model[0].bias[keep])
        narrow[1].weight.copy_(model[1].weight[keep])
        narrow[2].weight.copy_(model[2].weight[:, keep])
        narrow[2].bias.copy_(model[2].bias)
    ref = ModelRef(f"{__name__}:scaled_net")
    with pytest.raises(CheckpointError, match="Scale"):
        save_pruned(narrow, tmp_path / "without", model_ref=ref, info=CIFAR)
    rule = LayerRule(type=f"{__name__}.Scale", rebuild=("channels",))
    monkeypatch.setattr(get_plugins(), "layer_rules", [*get_plugins().layer_rules, rule])
    path = save_pruned(narrow, tmp_path / "with", model_ref=ref, info=CIFAR)
    assert read_spec(path)["modules"]["1"] == {"type": f"{__name__}.Scale", "channels": 4}
    x = torch.randn(2, 3, 8, 8)
    loaded = load_pruned(path, trust_code=True)
    assert isinstance(loaded[1], Scale) and loaded[1].channels == 4
    with torch.no_grad():
        assert torch.equal(loaded(x), narrow(x))
    monkeypatch.setattr(get_plugins(), "layer_rules", [r for r in get_plugins().layer_rules if r is not rule])
    with pytest.raises(CheckpointError, match="install the plugin"):
        load_pruned(path, trust_code=True)


CALLS: list[dict] = []


def counting_factory(width: int = 8) -> nn.Module:
    CALLS.append({"width": width})
    return nn.Conv2d(3, width, 1)


def planted(tmp_path: Path, name: str, kwargs: dict) -> Path:
    """A model saved from a registered name whose spec was then edited to name ``name(**kwargs)``."""
    from automl_prune.models.registry import build_model

    info = DataInfo(name="d", task="classification", in_channels=1, image_size=(8, 8), num_classes=10)
    path = save_pruned(
        build_model(ModelRef("plain-cnn"), info), tmp_path / "m", model_ref=ModelRef("plain-cnn"), info=info
    )
    spec = json.loads((path / "spec.json").read_text())
    spec["model_ref"] = {"name": name, "kwargs": kwargs}
    (path / "spec.json").write_text(json.dumps(spec))
    return path


def test_a_planted_spec_runs_nothing_without_trust(tmp_path: Path) -> None:
    from automl_prune.errors import UntrustedCodeError
    from tests.test_cli_errors import assert_clean_error, run

    marker = tmp_path / "pwned"
    path = planted(tmp_path, "os:system", {"command": f"touch {marker}"})
    with pytest.raises(UntrustedCodeError, match="'os:system'") as info:
        load_pruned(path)
    assert "trust_code=True" in info.value.fix and "--trust-model-code" in info.value.fix
    assert_clean_error(run("evaluate", str(path)), "os:system", "--trust-model-code")
    assert_clean_error(run("export", str(path)), "os:system")
    assert not marker.exists()


def test_spec_arguments_are_checked_against_the_factory_before_it_runs(tmp_path: Path) -> None:
    from automl_prune.errors import ModelError

    path = planted(tmp_path, f"{__name__}:counting_factory", {"width": 4, "command": "rm -rf /"})
    CALLS.clear()
    with pytest.raises(ModelError, match="does not take"):
        load_pruned(path, trust_code=True)
    assert CALLS == []
