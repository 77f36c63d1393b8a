"""The model zoo, user models (``module:factory``) and loading local weights."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from automl_prune.data.base import DataInfo
from automl_prune.errors import CheckpointError, ModelError, UnknownNameError
from automl_prune.models.base import ModelRef
from automl_prune.models.checkpoints import load_pretrained, load_weights
from automl_prune.models.registry import build_model
from automl_prune.plugins import get_plugins

DIGITS = DataInfo("digits", "classification", in_channels=1, image_size=(16, 16), num_classes=10)
RGB32 = DataInfo("rgb", "classification", in_channels=3, image_size=(32, 32), num_classes=5)
CLASSIFIERS = [  # the families torchvision:NAME and timm:NAME are tested in test_model_zoo
    e.name
    for e in get_plugins().models
    if e.meta.get("task") == "classification" and not e.meta.get("by_name")
]

USER_MODULE = """
from torch import nn

def make(hidden=8):
    return nn.Sequential(nn.Flatten(), nn.Linear(16, hidden), nn.BatchNorm1d(hidden), nn.Linear(hidden, 3))

def broken():
    raise RuntimeError("boom")

not_callable = 3
"""


def test_zoo_names_and_tasks() -> None:
    models = get_plugins().models
    expected = {
        "resnet20",
        "resnet56",
        "resnet18",
        "resnet34",
        "resnet50",
        "mobilenet_v2",
        "mobilenet_v3_small",
        "plain-cnn",
    }
    assert expected <= set(CLASSIFIERS)
    assert models.entry("unet").meta["task"] == "image-translation"
    assert all(e.meta.get("description") for e in models)


@pytest.mark.parametrize("name", CLASSIFIERS)
@pytest.mark.parametrize("info", [DIGITS, RGB32], ids=["digits", "rgb32"])
def test_every_classifier_fits_the_data(name: str, info: DataInfo) -> None:
    model = build_model(ModelRef(name), info).eval()
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.in_channels == info.in_channels
    with torch.no_grad():
        assert model(torch.randn(2, *info.input_shape)).shape == (2, info.num_classes)


def test_model_kwargs_reach_the_factory() -> None:
    model = build_model(ModelRef("resnet20", {"width": 8}), DIGITS)
    assert model.conv1.out_channels == 8


def test_unet_takes_channels_from_the_data() -> None:
    info = DataInfo("pairs", "image-translation", 1, (16, 16), extra={"out_channels": 3})
    model = build_model(ModelRef("unet", {"base": 4}), info).eval()
    assert model(torch.randn(2, 1, 16, 16)).shape == (2, 3, 16, 16)


def test_classifier_on_data_without_classes_is_a_model_error() -> None:
    info = DataInfo("pairs", "image-translation", 3, (16, 16))
    with pytest.raises(ModelError, match="has none"):
        build_model(ModelRef("resnet20"), info)


def test_bad_kwargs_are_a_model_error() -> None:
    with pytest.raises(ModelError, match="nope") as err:
        build_model(ModelRef("resnet20", {"nope": 1}), DIGITS)
    assert err.value.fix


def test_unknown_model_lists_known_names() -> None:
    with pytest.raises(UnknownNameError) as err:
        build_model(ModelRef("resnet21"), DIGITS)
    assert "resnet20" in str(err.value) and "did you mean" in str(err.value)


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "my_user_models.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_user_models"


def _trained_user_model(module: str) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    model = build_model(ModelRef(f"{module}:make", {"hidden": 6}), DIGITS)
    model.train()(torch.randn(8, 4, 4))  # moves the BatchNorm running stats away from their defaults
    x = torch.randn(5, 4, 4)
    return model, x, model.eval()(x)


@pytest.mark.parametrize("fmt", ["pt", "safetensors", "wrapped"])
def test_user_model_with_local_weights_reproduces_outputs(user_module: str, tmp_path: Path, fmt: str) -> None:
    model, x, expected = _trained_user_model(user_module)
    path = tmp_path / f"weights.{'safetensors' if fmt == 'safetensors' else 'pt'}"
    if fmt == "safetensors":
        save_file(model.state_dict(), str(path))
    else:
        torch.save({"state_dict": model.state_dict()} if fmt == "wrapped" else model.state_dict(), path)
    fresh = build_model(ModelRef(f"{user_module}:make", {"hidden": 6}), DIGITS)
    assert not torch.allclose(fresh.eval()(x), expected)
    torch.testing.assert_close(load_weights(fresh, path).eval()(x), expected)


@pytest.mark.parametrize(
    ("target", "match"),
    [
        ("no_such_module_xyz:make", "cannot import"),
        ("{m}:missing", "cannot import"),
        ("{m}:not_callable", "not callable"),
        ("{m}:broken", "boom"),
    ],
)
def test_bad_user_models_are_model_errors(user_module: str, target: str, match: str) -> None:
    with pytest.raises(ModelError, match=match):
        build_model(ModelRef(target.format(m=user_module)), DIGITS)


def test_missing_weights_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_weights(build_model(ModelRef("resnet20"), DIGITS), tmp_path / "nope.pt")


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_corrupt_weights_file(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"corrupt{suffix}"
    path.write_bytes(b"\x00garbage" * 50)
    with pytest.raises(CheckpointError, match="corrupt") as err:
        load_weights(build_model(ModelRef("resnet20"), DIGITS), path)
    assert str(path) in str(err.value)


def test_a_pickled_non_state_dict_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(CheckpointError, match="not a state dict"):
        load_weights(build_model(ModelRef("resnet20"), DIGITS), path)


def test_mismatched_weights_name_the_keys(tmp_path: Path) -> None:
    path = tmp_path / "w8.pt"
    torch.save(build_model(ModelRef("resnet20", {"width": 8}), DIGITS).state_dict(), path)
    model = build_model(ModelRef("resnet20"), DIGITS)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"wrong shape conv1\.weight \(8, 1, 3, 3\)") as err:
        load_weights(model, path)
    assert "more)" in str(err.value) and str(path) in str(err.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing half-loaded


def test_missing_and_unexpected_keys(tmp_path: Path) -> None:
    model = build_model(ModelRef("resnet20"), DIGITS)
    state = model.state_dict()
    state["extra.weight"] = state.pop("fc.weight")
    path = tmp_path / "keys.safetensors"
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match=r"missing fc\.weight; unexpected extra\.weight"):
        load_weights(model, path)


def test_pretrained_weights_for_other_classes_get_a_new_head(tmp_path: Path) -> None:
    imagenet = DataInfo("imagenet", "classification", in_channels=3, image_size=(32, 32), num_classes=1000)
    path = tmp_path / "imagenet.pt"
    torch.save(build_model(ModelRef("resnet18"), imagenet).state_dict(), path)
    model = build_model(ModelRef("resnet18"), RGB32)
    fresh_head = model.fc.weight.detach().clone()
    replaced = load_pretrained(model, path)
    assert replaced is not None and replaced.layer == "fc"
    assert "'fc'" in str(replaced) and "(1000, 512) -> (5, 512)" in str(replaced)
    saved = torch.load(path, weights_only=True)
    loaded = model.state_dict()
    assert all(torch.equal(saved[k], loaded[k]) for k in loaded if not k.startswith("fc."))
    assert torch.equal(model.fc.weight, fresh_head)  # the data's head, as the factory initialised it


def test_pretrained_weights_that_fit_load_as_they_are(tmp_path: Path) -> None:
    path = tmp_path / "same.pt"
    torch.save(build_model(ModelRef("resnet20"), DIGITS).state_dict(), path)
    model = build_model(ModelRef("resnet20"), DIGITS)
    assert load_pretrained(model, path) is None
    assert torch.equal(model.conv1.weight, torch.load(path, weights_only=True)["conv1.weight"])


def test_a_mismatch_beyond_the_head_stays_a_strict_error(tmp_path: Path) -> None:
    other = DataInfo("other", "classification", in_channels=1, image_size=(16, 16), num_classes=7)
    path = tmp_path / "w8.pt"
    torch.save(build_model(ModelRef("resnet20", {"width": 8}), other).state_dict(), path)
    model = build_model(ModelRef("resnet20"), DIGITS)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"wrong shape conv1\.weight"):
        load_pretrained(model, path)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
