"""Captioned Fashion-MNIST and photo patches: split by caption, words that match the re-measured images,
labels in range, Fashion-MNIST's missing-data error, and the place words of photo patches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from automl_prune.data import fashion_mnist
from automl_prune.data.base import DataSplits
from automl_prune.errors import DataError
from automl_prune.text_to_image import fashion_captions as fashion
from automl_prune.text_to_image import photo_captions as photos
from tests.test_t2i_captions import _column


def _fashion_installed() -> bool:
    try:
        fashion_mnist.find_files(download=False)
    except DataError:
        return False
    return True


needs_fashion = pytest.mark.skipif(not _fashion_installed(), reason="Fashion-MNIST is not installed here")


@pytest.fixture(scope="module")
def fashion_data() -> DataSplits:
    return fashion.fashion_captions(download=False)


@pytest.fixture(scope="module")
def photo_data() -> DataSplits:
    return photos.photo_captions()


def _unit(data: DataSplits, split: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A split's images back in [0, 1], its caption ids and labels."""
    images, ids, labels = (_column(data, split, i) for i in range(3))
    mean, std = (torch.tensor(data.info.extra[key]).view(1, -1, 1, 1) for key in ("mean", "std"))
    return images * std + mean, ids, labels


def _check_split_by_caption(data: DataSplits, total: int) -> None:
    prompts = {split: set(data.info.extra["prompts"][split]) for split in ("train", "val", "test")}
    assert {split: set(_column(data, split, 1).tolist()) for split in prompts} == prompts
    assert prompts["val"] and prompts["test"]
    assert not (prompts["train"] & prompts["val"] or prompts["train"] & prompts["test"])
    assert not prompts["val"] & prompts["test"]
    assert len(prompts["val"]) + len(prompts["test"]) == round(0.2 * len(data.info.extra["captions"]))
    assert sum(len(getattr(data, split)) for split in prompts) == total
    labels = torch.cat([_column(data, split, 2) for split in prompts])
    assert labels.min() == 0 and labels.max() == data.info.num_classes - 1
    assert set(_column(data, "train", 2).tolist()) == set(range(data.info.num_classes))


def _agreement(data: DataSplits, describe, positions: slice) -> float:
    """Share of held-out and training images whose caption words equal the re-measured words."""
    agree = []
    for split in ("train", "val", "test"):
        images, ids, labels = _unit(data, split)
        words = describe(images, data.info.extra["attributes"], labels)
        texts = [data.info.extra["captions"][i] for i in ids.tolist()]
        agree += [tuple(text.split()[positions]) == pair for text, pair in zip(texts, words, strict=True)]
    return float(np.mean(agree))


@needs_fashion
def test_fashion_captions_are_split_by_caption(fashion_data: DataSplits) -> None:
    assert (fashion_data.info.task, fashion_data.info.input_shape) == ("text-to-image", (1, 16, 16))
    _check_split_by_caption(fashion_data, total=3000)


@needs_fashion
def test_fashion_caption_words_match_the_remeasured_garments(fashion_data: DataSplits) -> None:
    assert _agreement(fashion_data, fashion.describe, slice(1, 3)) > 0.99  # float rounding aside
    _, ids, labels = _unit(fashion_data, "val")
    texts = [fashion_data.info.extra["captions"][i] for i in ids.tolist()]
    assert all(
        text.endswith(fashion.CLASS_WORDS[label]) for text, label in zip(texts, labels.tolist(), strict=True)
    )


def test_fashion_words_are_cut_per_class() -> None:
    small_bright = torch.zeros(1, 1, 10, 10)
    small_bright[..., :2, :5] = 0.9  # covers 10%
    large_dark = torch.full((1, 1, 10, 10), 0.3)  # covers all
    images = torch.cat([small_bright, large_dark, large_dark])
    thresholds = {"size": [[0.2, 0.5], [0.95, 0.99]], "brightness": [[0.4, 0.8], [0.1, 0.2]]}
    words = fashion.describe(images, thresholds, torch.tensor([0, 0, 1]))
    assert words == [("small", "light"), ("large", "dark"), ("large", "light")]


def test_fashion_captions_raise_the_loaders_error_without_the_data(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv(fashion_mnist.ENV_VAR, raising=False)
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "absent")
    monkeypatch.setattr(fashion_mnist, "cache_dir", lambda: tmp_path)
    with pytest.raises(DataError) as captioned:
        fashion.fashion_captions(download=False)
    with pytest.raises(DataError) as plain:
        fashion_mnist.fashion_mnist(download=False)
    assert str(captioned.value) == str(plain.value)
    assert captioned.value.fix == fashion_mnist.INSTALL_FIX
    with pytest.raises(DataError, match="no Fashion-MNIST"):
        fashion.fashion_captions(str(tmp_path))


def test_photo_captions_load_offline_as_rgb_patches(photo_data: DataSplits) -> None:
    info = photo_data.info
    assert (info.task, info.input_shape, info.num_classes) == ("text-to-image", (3, 16, 16), 8)
    assert info.extra["photos"] == list(photos.PHOTOS.values())
    _check_split_by_caption(photo_data, total=8 * 400)


def test_photo_caption_words_match_the_patches(photo_data: DataSplits) -> None:
    assert _agreement(photo_data, photos.describe, slice(1, 2)) > 0.99
    _, ids, labels = _unit(photo_data, "test")
    texts = [photo_data.info.extra["captions"][i] for i in ids.tolist()]
    names = photo_data.info.extra["photos"]
    assert all(
        text.endswith(f" {names[label]} photo") for text, label in zip(texts, labels.tolist(), strict=True)
    )


def test_patch_places_name_where_they_were_cut() -> None:
    rows, columns = torch.meshgrid(torch.arange(40.0), torch.arange(64.0), indexing="ij")
    image = torch.stack([rows / 39, columns / 63, torch.zeros_like(rows)])  # pixels tell their position
    cut, places = photos.patches(image, 300, 16, np.random.default_rng(0))
    for patch, where in zip(cut, places, strict=True):
        row = min(2, int(3 * (patch[0, 0, 0] * 39) / (40 - 16 + 1)))
        column = min(2, int(3 * (patch[1, 0, 0] * 63) / (64 - 16 + 1)))
        assert where == photos.PLACES[row][column]
    assert set(places) == {word for line in photos.PLACES for word in line}


@pytest.mark.parametrize(
    ("build", "options", "match"),
    [
        (photos.photo_captions, {"scale": 0}, "scale"),
        (photos.photo_captions, {"per_photo": 2}, "per_photo"),
        (photos.photo_captions, {"arg": "x"}, "no argument"),
        (photos.photo_captions, {"unseen": 0.95}, "outside"),
        (photos.photo_captions, {"augment": True}, "augment"),
        pytest.param(fashion.fashion_captions, {"limit": 5}, "limit", marks=needs_fashion),
    ],
)
def test_bad_options_raise_data_errors(build, options: dict, match: str) -> None:
    with pytest.raises(DataError, match=match) as caught:
        build(**options)
    assert caught.value.fix
