"""Dataset preprocessing options: normalisation presets and values, framing, augmentation, records."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from automl_prune.data.base import DataSplits
from automl_prune.data.preprocessing import NORM_PRESETS, override_options
from automl_prune.data.registry import load_dataset
from automl_prune.errors import DataError
from tests.test_data import _fake_mnist

IMAGENET_MEAN, IMAGENET_STD = (torch.tensor(values).view(3, 1, 1) for values in NORM_PRESETS["imagenet"])
COLOUR = (200, 100, 50)
RAW = {"mean": 0, "std": 1}  # pixels as they are, in [0, 1]


def _folder(root: Path, draw: Callable[[int], Image.Image], per_class: int = 4) -> Path:
    """Class folders ``a/`` and ``b/`` of PNGs; ``draw(i)`` makes the i-th image."""
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            draw(i).save(root / label / f"{i}.png")
    return root


def _noise(i: int) -> Image.Image:
    rng = np.random.default_rng(i)
    return Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))


def _bordered(i: int) -> Image.Image:
    """20 x 20: a 5-pixel red border around a green centre."""
    image = Image.new("RGB", (20, 20), (255, 0, 0))
    image.paste((0, 255, 0), (5, 5, 15, 15))
    return image


def _wide(i: int) -> Image.Image:
    """10 high x 20 wide: its left quarter red, the rest green."""
    image = Image.new("RGB", (20, 10), (0, 255, 0))
    image.paste((255, 0, 0), (0, 0, 5, 10))
    return image


@pytest.fixture(scope="module")
def solid(tmp_path_factory: pytest.TempPathFactory) -> str:
    return "folder:" + str(
        _folder(tmp_path_factory.mktemp("solid"), lambda i: Image.new("RGB", (8, 8), COLOUR))
    )


@pytest.fixture(scope="module")
def noise(tmp_path_factory: pytest.TempPathFactory) -> str:
    return "folder:" + str(_folder(tmp_path_factory.mktemp("noise"), _noise))


@pytest.fixture(scope="module")
def raw_digits() -> torch.Tensor:
    """The digits' val images in [0, 1] (16 x 16)."""
    return load_dataset("digits", **RAW).val.tensors[0]


def _items(splits: DataSplits) -> list[torch.Tensor]:
    return [split[0][0] for split in (splits.train, splits.val, splits.test)]


@pytest.mark.parametrize(
    ("options", "mean", "std"),
    [
        ({"norm": "mnist"}, 0.1307, 0.3081),
        ({"norm": "inception"}, 0.5, 0.5),
        ({"mean": "0.2", "std": [0.5]}, 0.2, 0.5),  # as --data-arg and as a YAML list deliver them
    ],
)
def test_digits_normalisation(raw_digits: torch.Tensor, options: dict, mean: float, std: float) -> None:
    assert raw_digits.min() == 0 and raw_digits.max() == 1
    data = load_dataset("digits", **options)
    torch.testing.assert_close(data.val.tensors[0], (raw_digits - mean) / std)
    assert data.info.extra["mean"] == [mean] and data.info.extra["std"] == [std]
    assert data.info.extra["preprocessing"]["norm"] == options.get("norm")


def test_digits_default_is_the_train_statistics(raw_digits: torch.Tensor) -> None:
    default, train = load_dataset("digits"), load_dataset("digits", norm="train")
    assert torch.equal(default.val.tensors[0], train.val.tensors[0])
    mean, std = default.info.extra["mean"][0], default.info.extra["std"][0]
    assert 0 < mean < 0.5 and 0.2 < std < 1  # the train split's, not a preset's
    torch.testing.assert_close(default.val.tensors[0], (raw_digits - mean) / std)
    assert default.info.extra["preprocessing"]["norm"] == "train"


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"norm": "imagenet"}, lambda pixel: (pixel - IMAGENET_MEAN) / IMAGENET_STD),
        (
            {"mean": "0.485,0.456,0.406", "std": "0.229,0.224,0.225"},
            lambda pixel: (pixel - IMAGENET_MEAN) / IMAGENET_STD,
        ),
        ({"mean": 0.5, "std": 0.25}, lambda pixel: (pixel - 0.5) / 0.25),  # one value for every channel
        ({}, lambda pixel: (pixel - 0.5) / 0.5),  # the default for image files: [-1, 1]
    ],
)
def test_folder_normalisation(solid: str, options: dict, expected: Callable) -> None:
    data = load_dataset(solid, **options)  # augmented (the default), which leaves a solid colour as it is
    pixel = torch.tensor(COLOUR).view(3, 1, 1) / 255
    for image in _items(data):
        torch.testing.assert_close(image, expected(pixel).expand(3, 8, 8).float())
    assert len(data.info.extra["mean"]) == len(data.info.extra["std"]) == 3


def test_folder_records_its_preprocessing(solid: str) -> None:
    data = load_dataset(solid, norm="imagenet", crop_pct=0.875, interpolation="bicubic", size=7)
    assert data.info.extra["mean"] == [0.485, 0.456, 0.406]
    assert data.info.extra["preprocessing"] == {
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "norm": "imagenet",
        "crop_pct": 0.875,
        "interpolation": "bicubic",
        "augment": True,
        "resize": [8, 8],
    }
    assert data.info.extra["options"]["norm"] == "imagenet"  # what evaluate reloads the data with


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"mean": "0.1,0.2", "std": 0.5}, "mean has 2 and std 1 values for 3-channel data"),
        ({"mean": 0.5, "std": 0}, "has a value <= 0"),
        ({"mean": 0.5, "std": "0.2,-1,0.3"}, "has a value <= 0"),
        ({"mean": "a,b", "std": 1}, "not a number"),
        ({"norm": "imagenett"}, "unknown normalisation preset"),
        ({"norm": "imagenet", "mean": 0.5, "std": 0.5}, "both given"),
        ({"mean": 0.5}, "mean was given without std"),
        ({"norm": "train"}, "only for in-memory datasets"),
        ({"norm": "imagenet", "channels": 1}, "has 3 channels, the data 1"),
        ({"crop_pct": 0}, "outside"),
        ({"crop_pct": 1.5}, "outside"),
        ({"crop_pct": "most"}, "not a number"),
        ({"interpolation": "lanczos"}, "unknown interpolation"),
        ({"augment": "maybe"}, "not true or false"),
    ],
)
def test_bad_options_say_what_and_how(solid: str, options: dict, problem: str) -> None:
    with pytest.raises(DataError, match=problem) as err:
        load_dataset(solid, **options)
    assert err.value.fix


def test_option_errors_on_in_memory_data_name_the_fix() -> None:
    with pytest.raises(DataError, match="preset norm=imagenet has 3 channels") as err:
        load_dataset("digits", norm="imagenet")
    assert "one value" in err.value.fix and "channels=3" in err.value.fix
    with pytest.raises(DataError) as err:
        load_dataset("digits", norm="imagnet")
    assert all(name in err.value.fix for name in ("imagenet", "inception", "mnist", "cifar10", "train"))


def test_augment_changes_train_reads_only(noise: str) -> None:
    augmented, plain = load_dataset(noise, size=12), load_dataset(noise, size=12, augment=False)
    assert len({augmented.train[0][0].numpy().tobytes() for _ in range(4)}) > 1
    for data in (augmented, plain):
        for split in (data.val, data.test) if data is augmented else (data.train, data.val, data.test):
            assert torch.equal(split[0][0], split[0][0])
    assert torch.equal(augmented.val[0][0], plain.val[0][0]) and torch.equal(
        augmented.test[0][0], plain.test[0][0]
    )
    assert augmented.train[0][0].shape == (3, 12, 12)


@pytest.mark.parametrize("layout", ["one folder", "train/ and val/"])
def test_augment_keeps_the_split(tmp_path: Path, layout: str) -> None:
    if layout == "one folder":
        _folder(tmp_path, _noise, per_class=10)
    else:
        _folder(tmp_path / "train", _noise, per_class=10)
        _folder(tmp_path / "val", _noise, per_class=2)
    augmented, plain = (load_dataset(f"folder:{tmp_path}", augment=flag) for flag in (True, False))
    assert augmented.train.indices == plain.train.indices  # the same seeded hold-out
    for split in ("val", "test"):
        a, b = getattr(augmented, split), getattr(plain, split)
        assert len(a) == len(b) and getattr(a, "indices", None) == getattr(b, "indices", None)
        assert all(torch.equal(a[i][0], b[i][0]) for i in range(len(a)))


def test_in_memory_augmentation(raw_digits: torch.Tensor) -> None:
    data = load_dataset("digits", augment=True)
    assert len({data.train[0][0].numpy().tobytes() for _ in range(4)}) > 1
    assert data.train[0][0].shape == (1, 16, 16) and torch.equal(
        data.train.tensors[0], load_dataset("digits").train.tensors[0]
    )
    assert torch.equal(data.val[0][0], data.val[0][0])
    assert data.info.extra["preprocessing"]["augment"] is True


def test_crop_pct_centre_crops(tmp_path: Path) -> None:
    root = f"folder:{_folder(tmp_path, _bordered)}"
    cropped = load_dataset(root, size=10, crop_pct=0.5, augment=False, **RAW)
    for image in _items(cropped):  # 20 px covers 10 / 0.5: the centre 10 x 10 is all green
        assert image[0].max() == 0 and image[1].min() == 1
    assert cropped.info.extra["preprocessing"]["resize"] == [20, 20]
    whole = load_dataset(root, size=10, augment=False, **RAW)
    assert whole.val[0][0][0].max() > 0.5  # crop_pct 1: the border is in


def test_framing_keeps_the_aspect_ratio(tmp_path: Path) -> None:
    """A 10 x 20 image framed to 10 x 10 keeps its middle instead of being squashed."""
    data = load_dataset(f"folder:{_folder(tmp_path, _wide)}", size=10, augment=False, **RAW)
    assert data.val[0][0][0].max() == 0  # the red left quarter is cropped away, not squeezed in


def test_interpolation_and_crop_pct_on_in_memory_data() -> None:
    big = load_dataset("digits", size=32, **RAW).val.tensors[0]
    cropped = load_dataset("digits", crop_pct=0.5, **RAW).val.tensors[0]  # 16 / 0.5 = 32, centre 16
    assert torch.equal(cropped, big[..., 8:24, 8:24])
    bicubic = load_dataset("digits", interpolation="bicubic", **RAW).val.tensors[0]
    assert not torch.equal(bicubic, load_dataset("digits", **RAW).val.tensors[0])
    assert bicubic.min() >= 0 and bicubic.max() <= 1


def test_torchvision_dataset_options(tmp_path: Path) -> None:
    _fake_mnist(tmp_path / "FashionMNIST" / "raw", compress=False)
    data = load_dataset("torchvision:FashionMNIST", root=tmp_path, download=False, norm="mnist")
    pixels = torch.from_numpy(np.array(data.val.dataset[0][0])).float() / 255
    torch.testing.assert_close(data.val[0][0], ((pixels - 0.1307) / 0.3081).unsqueeze(0))
    assert data.info.extra["mean"] == [0.1307] and data.info.extra["preprocessing"]["augment"] is True
    assert len({data.train[0][0].numpy().tobytes() for _ in range(4)}) > 1
    plain = load_dataset("torchvision:FashionMNIST", root=tmp_path, download=False, augment=False)
    assert torch.equal(plain.train[0][0], plain.train[0][0])


def test_paired_data_takes_no_normalisation(tmp_path: Path) -> None:
    for i in range(8):
        for side in ("A", "B"):
            (tmp_path / side).mkdir(exist_ok=True)
            _noise(i).save(tmp_path / side / f"{i}.png")
    with pytest.raises(DataError, match="does not take"):
        load_dataset(f"paired:{tmp_path}", norm="imagenet")


def test_override_options_replaces_the_normalisation_whole() -> None:
    stored = {"norm": "mnist", "size": 16}
    assert override_options(stored, {"mean": 0.5, "std": 0.5}) == {"size": 16, "mean": 0.5, "std": 0.5}
    assert override_options({"mean": 0.1, "std": 0.3}, {"norm": "train"}) == {"norm": "train"}
    assert override_options(stored, {"seed": 1}) == {**stored, "seed": 1}


def test_evaluate_reuses_the_normalisation_a_model_was_pruned_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from automl_prune import evaluation
    from automl_prune.models.base import ModelRef
    from automl_prune.models.cifar_resnet import resnet20
    from automl_prune.pruning import save_pruned

    info = load_dataset("digits", norm="mnist").info
    path = save_pruned(
        resnet20(width=4, in_channels=1),
        tmp_path / "model",
        model_ref=ModelRef("resnet20", {"width": 4}),
        info=info,
        metadata={"data": "digits", "data_args": {"norm": "mnist"}},
    )
    loaded: list[dict] = []

    def recording(spec: str, **options: object) -> DataSplits:
        splits = load_dataset(spec, **options)
        loaded.append(splits.info.extra["preprocessing"])
        return splits

    monkeypatch.setattr(evaluation, "load_dataset", recording)
    evaluation.evaluate_saved(path, data=None, split="val", device="cpu", batch_size=512)
    assert loaded[-1]["norm"] == "mnist" and loaded[-1]["mean"] == [0.1307]
    given = {"mean": 0.5, "std": 0.25}
    evaluation.evaluate_saved(path, data=None, split="val", device="cpu", batch_size=512, data_args=given)
    assert loaded[-1]["norm"] is None and loaded[-1]["std"] == [0.25]  # replaces the stored norm


def test_a_timm_config_frames_and_normalises_as_timm_does(tmp_path: Path) -> None:
    """timm's pretrained-config keys pass through as options and give timm's own evaluation pixels."""
    create_transform = pytest.importorskip("timm.data").create_transform
    config = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225), "interpolation": "bicubic"}
    root = _folder(tmp_path, lambda i: _noise(i).resize((45, 30)))  # 30 high x 45 wide
    for crop_pct in (0.875, 0.9, 1.0):
        data = load_dataset(f"folder:{root}", size=32, crop_pct=crop_pct, augment=False, **config)
        timm_transform = create_transform(
            input_size=(3, 32, 32), crop_pct=crop_pct, crop_mode="center", **config
        )
        path = data.val.dataset.samples[data.val.indices[0]][0]
        torch.testing.assert_close(data.val[0][0], timm_transform(Image.open(path).convert("RGB")))
