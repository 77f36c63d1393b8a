"""Captioned digits: the measured stroke attributes, their words, and the split by prompt."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from automl_prune.data.base import DataSplits
from automl_prune.data.common import AugmentedTensors, resize_and_crop
from automl_prune.data.digits import digit_images
from automl_prune.errors import DataError
from automl_prune.text_to_image.captions import (
    DIGIT_WORDS,
    describe,
    digits_captions,
    split_prompts,
    stroke_attributes,
)


def _bar(width: int, lean: int = 0, size: int = 16) -> torch.Tensor:
    """A (1, 1, size, size) bar ``width`` pixels wide whose top is ``lean`` pixels right of its bottom."""
    image = torch.zeros(1, 1, size, size)
    for row in range(2, size - 2):
        left = size // 2 - width // 2 + round(lean * (size - 1 - row) / (size - 1) - lean / 2)
        image[0, 0, row, left : left + width] = 1.0
    return image


def _column(splits: DataSplits, split: str, index: int) -> torch.Tensor:
    dataset = getattr(splits, split)
    return torch.stack([dataset[i][index] for i in range(len(dataset))])


@pytest.fixture(scope="module")
def data() -> DataSplits:
    return digits_captions()


def test_thickness_grows_with_stroke_width() -> None:
    thickness = stroke_attributes(torch.cat([_bar(2), _bar(5)]))["thickness"]
    assert thickness[1] > thickness[0]


def test_slant_sign_follows_the_lean_at_any_size() -> None:
    for size in (8, 16):
        slant = stroke_attributes(torch.cat([_bar(2, 6, size), _bar(2, -6, size), _bar(2, 0, size)]))["slant"]
        assert slant[0] > 0.2 and slant[1] < -0.2
        assert abs(slant[2]) < 1e-6


def test_8x8_and_16x16_digits_get_the_same_words(data: DataSplits) -> None:
    small = digit_images()[0]
    words = [
        describe(images, data.info.extra["attributes"])
        for images in (small, resize_and_crop(small, (16, 16)))
    ]
    assert np.mean([a == b for a, b in zip(*words, strict=True)]) > 0.97


def test_describe_uses_the_cut_points() -> None:
    thresholds = {"thickness": [0.1, 0.2], "slant": [-0.1, 0.1]}
    words = describe(torch.cat([_bar(1, 8), _bar(3), _bar(7, -8)]), thresholds)
    assert words == [("thin", "right-leaning"), ("regular", "upright"), ("bold", "left-leaning")]


def test_split_by_prompt_keeps_val_and_test_prompts_out_of_training(data: DataSplits) -> None:
    prompts = {split: set(data.info.extra["prompts"][split]) for split in ("train", "val", "test")}
    seen = {split: set(_column(data, split, 1).tolist()) for split in prompts}
    assert seen == prompts
    assert prompts["val"] and prompts["test"]
    assert not prompts["train"] & prompts["val"] and not prompts["train"] & prompts["test"]
    assert not prompts["val"] & prompts["test"]
    assert sum(len(getattr(data, split)) for split in prompts) == 1797
    held_out = len(prompts["val"]) + len(prompts["test"])
    assert held_out == round(0.2 * len(data.info.extra["captions"]))


def test_every_digit_has_a_training_caption(data: DataSplits) -> None:
    assert set(_column(data, "train", 2).tolist()) == set(range(10))
    digit_of = np.array([DIGIT_WORDS.index(text.split()[-1]) for text in data.info.extra["captions"]])
    for seed in range(20):  # most captions held out: digits would lose all theirs without the fix
        train, val, test = split_prompts(digit_of, 0.9, seed)
        assert set(digit_of[train]) == set(range(10))
        assert val.size and test.size
        assert sorted(np.concatenate([train, val, test]).tolist()) == list(range(len(digit_of)))


def test_caption_ids_name_the_digit_and_the_measured_words(data: DataSplits) -> None:
    extra = data.info.extra
    assert extra["captions"] == sorted(set(extra["captions"]))
    images, ids, labels = (_column(data, "train", i) for i in range(3))
    assert ids.dtype == labels.dtype == torch.long
    texts = [extra["captions"][i] for i in ids.tolist()]
    assert all(
        text.split()[-1] == DIGIT_WORDS[label] for text, label in zip(texts, labels.tolist(), strict=True)
    )
    unit = images * torch.tensor(extra["std"]).view(1, -1, 1, 1) + torch.tensor(extra["mean"]).view(
        1, -1, 1, 1
    )
    words = describe(unit, extra["attributes"])
    agree = np.mean([text.split()[1:3] == list(pair) for text, pair in zip(texts, words, strict=True)])
    assert (
        agree > 0.99
    )  # the stored cut points judge the images as they were captioned (float rounding aside)


def test_the_seed_draws_the_split(data: DataSplits) -> None:
    digit_of = np.array([DIGIT_WORDS.index(text.split()[-1]) for text in data.info.extra["captions"]])
    drawn = split_prompts(digit_of, 0.2, seed=0)
    assert [ids.tolist() for ids in drawn] == list(data.info.extra["prompts"].values())
    assert all(np.array_equal(a, b) for a, b in zip(drawn, split_prompts(digit_of, 0.2, seed=0), strict=True))
    assert not np.array_equal(split_prompts(digit_of, 0.2, seed=1)[1], drawn[1])


def test_info_describes_a_16x16_text_to_image_dataset(data: DataSplits) -> None:
    info = data.info
    assert (info.task, info.num_classes, info.input_shape) == ("text-to-image", 10, (1, 16, 16))
    assert data.val[0][0].shape == (1, 16, 16)
    assert {"captions", "attributes", "prompts", "seed", "unseen", "mean", "std"} <= info.extra.keys()


def test_tertiles_put_a_third_of_the_digits_in_each_bin(data: DataSplits) -> None:
    texts = [
        data.info.extra["captions"][i] for split in ("train", "val", "test") for i in _column(data, split, 1)
    ]
    for position, words in (
        (1, ("thin", "regular", "bold")),
        (2, ("left-leaning", "upright", "right-leaning")),
    ):
        counts = [sum(text.split()[position] == word for text in texts) for word in words]
        assert all(abs(count - 1797 / 3) < 30 for count in counts), counts


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"unseen": 0}, "outside"),
        ({"unseen": 0.95}, "outside"),
        ({"unseen": "half"}, "outside"),
        ({"augment": True}, "augment"),
        ({"arg": "x"}, "no argument"),
    ],
)
def test_bad_options_raise_data_errors(options: dict, match: str) -> None:
    with pytest.raises(DataError, match=match) as caught:
        digits_captions(**options)
    assert caught.value.fix


def test_augmented_tensors_transform_only_the_image() -> None:
    dataset = AugmentedTensors(
        torch.ones(2, 1, 4, 4), torch.tensor([3, 4]), torch.tensor([5, 6]), transform=torch.neg
    )
    image, caption_id, label = dataset[1]
    assert image.sum() == -16 and (caption_id.item(), label.item()) == (4, 6)
