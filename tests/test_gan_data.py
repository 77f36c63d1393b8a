"""The GAN plugin's offline image-to-image datasets: photo patches, Fashion-MNIST edges -> garment and
CycleGAN-style folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from automl_prune_gan.data import photo_colour, photo_edges, photo_unpaired
from automl_prune_gan.fashion import fashion_edges, fashion_unpaired, garment_edges
from automl_prune_gan.folders import unpaired_folder
from automl_prune_gan.models import cyclegan, pix2pix
from PIL import Image

from automl_prune.data.base import DataSplits
from automl_prune.errors import DataError
from tests.test_data import _fake_mnist

LUMA = torch.tensor([0.2125, 0.7154, 0.0721]).view(3, 1, 1)  # skimage.color.rgb2gray's weights
ALL_PHOTOS = {
    "astronaut",
    "chelsea",
    "coffee",
    "hubble_deep_field",
    "rocket",
    "motorcycle_left",
    "motorcycle_right",
    "china",
    "flower",
}


def _grey(rgb: torch.Tensor) -> torch.Tensor:
    return (rgb * LUMA).sum(dim=-3, keepdim=True)


def _stack(dataset: torch.utils.data.Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = zip(*(dataset[i] for i in range(len(dataset))), strict=True)
    return torch.stack(a), torch.stack(b)


@pytest.fixture(scope="module")
def edges() -> DataSplits:
    return photo_edges(None)


@pytest.fixture(scope="module")
def colour() -> DataSplits:
    return photo_colour(None)


@pytest.fixture(scope="module")
def unpaired() -> DataSplits:
    return photo_unpaired(None)


@pytest.mark.parametrize("name", ["edges", "colour"])
def test_paired_photo_shapes_ranges_and_info(name: str, request: pytest.FixtureRequest) -> None:
    splits = request.getfixturevalue(name)
    info = splits.info
    assert info.task == "image-translation" and info.num_classes == 0
    assert info.input_shape == (1, 32, 32)
    assert info.extra["out_channels"] == 3 and info.extra["paired"] is True
    assert (info.extra["mean"], info.extra["std"]) == ([0.5], [0.5])
    assert (len(splits.train), len(splits.val), len(splits.test)) == (952, 77, 77)
    for split in (splits.train, splits.val, splits.test):
        a, b = _stack(split)
        assert a.dtype == b.dtype == torch.float32
        assert a.shape[1:] == (1, 32, 32) and b.shape[1:] == (3, 32, 32)
        assert a.min() >= -1 and a.max() <= 1 and b.min() >= -1 and b.max() <= 1
        assert b.min() < -0.5 and b.max() - b.min() > 1.5  # spread over [-1, 1], not [0, 1]


def test_splits_are_disjoint_by_photo(edges: DataSplits, unpaired: DataSplits) -> None:
    for splits in (edges, unpaired):
        photos = {split: set(names) for split, names in splits.info.extra["photos"].items()}
        assert photos["val"] and photos["test"]
        assert not (photos["train"] & photos["val"] or photos["train"] & photos["test"])
        assert not photos["val"] & photos["test"]
        assert photos["train"] | photos["val"] | photos["test"] == ALL_PHOTOS
    # the items agree with the recorded names, and no val/test patch's pixels occur in train
    for split in ("train", "val", "test"):
        patches = getattr(edges, split).b
        assert {patches.photo(i) for i in range(len(patches))} == set(edges.info.extra["photos"][split])
    train = {b.numpy().tobytes() for _, b in (edges.train[i] for i in range(len(edges.train)))}
    for split in (edges.val, edges.test):
        assert not train & {split[i][1].numpy().tobytes() for i in range(len(split))}


def test_train_is_natural_scenes_with_sklearn_photos(colour: DataSplits, unpaired: DataSplits) -> None:
    """The microscopy stains (red retina, pink immunohistochemistry) taught the base GAN red cat fur."""
    for splits in (colour, unpaired):
        train = set(splits.info.extra["photos"]["train"])
        assert {"china", "flower"} <= train
        assert not train & {"retina", "immunohistochemistry"}
    names = colour.train.a.photos
    china = colour.train.b[names.index("china")]
    assert china.shape == (3, 32, 32) and china.std() > 0.05  # a decoded photo, not a blank
    counts = {name: names.count(name) for name in ("china", "flower")}
    assert counts == {"china": 77, "flower": 77}  # 427 x 640 -> 128 x 192: 7 x 11 patches each


def test_photo_edges_input_is_binary_and_sparse(edges: DataSplits) -> None:
    a, _ = _stack(edges.train)
    values = torch.unique(a)
    assert values.tolist() == [-1.0, 1.0]
    assert 0.02 < (a == 1).float().mean() < 0.3  # outlines, not noise nor nothing


def test_train_holds_mirrored_copies(edges: DataSplits) -> None:
    half = len(edges.train) // 2
    for i in (0, 5, half - 1):
        (a, b), (fa, fb) = edges.train[i], edges.train[i + half]
        assert torch.equal(fa, a.flip(-1)) and torch.equal(fb, b.flip(-1))
        assert not torch.equal(fb, b)  # a real photo patch is not mirror-symmetric
    assert len(edges.val) == len({edges.val[i][1].numpy().tobytes() for i in range(len(edges.val))})


def test_photo_colour_input_is_grey_of_target(colour: DataSplits) -> None:
    for split in (colour.train, colour.val, colour.test):
        a, b = _stack(split)
        torch.testing.assert_close(a, _grey(b), atol=1e-5, rtol=0)


def test_photo_unpaired_train_never_pairs_a_with_its_own_target(unpaired: DataSplits) -> None:
    info = unpaired.info
    assert info.task == "image-translation" and info.input_shape == (3, 32, 32)
    assert info.extra["paired"] is False and info.extra["paired_eval"] is True
    assert (info.extra["out_channels"], info.extra["mean"]) == (3, [0.5] * 3)
    train = unpaired.train
    assert len(train) == max(train.len_a, train.len_b) == 406
    a, b = _stack(train)
    assert a.shape[1:] == b.shape[1:] == (3, 32, 32)
    assert torch.equal(a[:, :1].expand_as(a), a)  # grey, replicated to 3 channels
    assert a.min() >= -1 and a.max() <= 1 and b.min() >= -1 and b.max() <= 1
    # the grey of every B patch differs from every A patch: the domains come from disjoint halves
    grey_b = _grey(b)[:, 0].flatten(1)
    distance = torch.cdist(a[:, 0].flatten(1), grey_b)
    assert distance.min() > 0.1
    # every B patch is used, in a seeded order that does not follow A's
    assert sorted(train.index_b(i) for i in range(len(train))) == list(range(train.len_b))
    assert [train.index_b(i) for i in range(len(train))] != list(range(len(train)))


def test_photo_unpaired_eval_pairs_are_exact(unpaired: DataSplits) -> None:
    for split in (unpaired.val, unpaired.test):
        a, b = _stack(split)
        assert len(a) == 77 and a.shape[1:] == b.shape[1:] == (3, 32, 32)
        torch.testing.assert_close(a, _grey(b).expand_as(b), atol=1e-5, rtol=0)


def test_photo_unpaired_is_seeded(unpaired: DataSplits) -> None:
    again, other = photo_unpaired(None), photo_unpaired(None, seed=1)
    for i in (0, 17, 200):
        assert all(torch.equal(x, y) for x, y in zip(again.train[i], unpaired.train[i], strict=True))
    assert any(not torch.equal(other.train[i][1], unpaired.train[i][1]) for i in range(10))


def test_photo_options_and_errors() -> None:
    small = photo_colour(None, size=16, scale=64)
    a, b = small.train[0]
    assert (a.shape, b.shape, small.info.image_size) == ((1, 16, 16), (3, 16, 16), (16, 16))
    assert len(small.val) == 7 * 11  # chelsea at 64 x 96, stride 8
    with pytest.raises(DataError, match="takes no argument"):
        photo_edges("somewhere")
    with pytest.raises(DataError, match="takes no argument"):
        photo_unpaired("x")
    with pytest.raises(DataError, match="scale >= size"):
        photo_edges(None, size=64, scale=32)


def _write(folder: Path, names: list[str], colour: tuple[int, int, int], size: int = 12) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(len(names))
    for name in names:
        pixels = np.clip(np.array(colour) + rng.integers(-20, 20, (size, size, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / name)


@pytest.fixture
def cyclegan_folder(tmp_path: Path) -> Path:
    _write(tmp_path / "trainA", ["a1.png", "a2.png", "a3.png"], (200, 30, 30))
    _write(tmp_path / "trainB", [f"b{i}.png" for i in range(5)], (30, 30, 200))
    for split in ("val", "test"):
        _write(tmp_path / f"{split}A", ["x.png", "y.png"], (200, 30, 30))
        _write(tmp_path / f"{split}B", ["x.png", "y.png"], (30, 30, 200))
    return tmp_path


def test_unpaired_folder(cyclegan_folder: Path) -> None:
    splits = unpaired_folder(str(cyclegan_folder), size=8, seed=3)
    info = splits.info
    assert info.task == "image-translation" and info.input_shape == (3, 8, 8)
    assert info.extra["paired"] is False and info.extra["paired_eval"] is True
    assert (len(splits.train), len(splits.val), len(splits.test)) == (5, 2, 2)
    a, b = _stack(splits.train)
    assert a.shape == b.shape == (5, 3, 8, 8) and a.min() >= -1 and b.max() <= 1
    assert (a[:, 0] > a[:, 2]).all() and (b[:, 2] > b[:, 0]).all()  # red domain A, blue domain B
    assert len({x.numpy().tobytes() for x in b}) == 5  # all of trainB, each once
    pairs = splits.val.pairs
    assert [(p.parent.name, q.parent.name, p.name == q.name) for p, q in pairs] == [
        ("valA", "valB", True)
    ] * 2
    grey = unpaired_folder(str(cyclegan_folder), channels=1, out_channels=3)
    assert grey.train[0][0].shape == (1, 12, 12) and grey.train[0][1].shape == (3, 12, 12)


def test_a_corrupt_training_image_is_named(cyclegan_folder: Path) -> None:
    """Unpaired training images are read like every other file-backed image: a DataError naming the file."""
    (cyclegan_folder / "trainB" / "b3.png").write_bytes(b"not a png")
    splits = unpaired_folder(str(cyclegan_folder), size=8, seed=3)
    with pytest.raises(DataError, match=r"cannot read image .*b3\.png"):
        _stack(splits.train)


def test_unpaired_folder_errors(cyclegan_folder: Path) -> None:
    (cyclegan_folder / "valB" / "y.png").rename(cyclegan_folder / "valB" / "z.png")
    with pytest.raises(DataError, match="same file name"):
        unpaired_folder(str(cyclegan_folder))
    for path in (cyclegan_folder / "testA").iterdir():
        path.unlink()
    (cyclegan_folder / "testA").rmdir()
    with pytest.raises(DataError, match="testA") as error:
        unpaired_folder(str(cyclegan_folder))
    assert "testB" not in error.value.problem and "testA" in error.value.fix
    with pytest.raises(DataError, match="does not exist"):
        unpaired_folder(str(cyclegan_folder / "nowhere"))


def test_fashion_edges_pairs_every_garment_with_its_own_edges(tmp_path: Path) -> None:
    _fake_mnist(tmp_path)  # 60 train + 20 test images of noise, in Fashion-MNIST's idx files
    data = fashion_edges(str(tmp_path), limit_train=30, val_size=10)
    assert (len(data.train), len(data.val), len(data.test)) == (30, 10, 20)
    for split in (data.train, data.val, data.test):
        edges, garments = split.tensors
        assert edges.shape == garments.shape == (len(split), 1, 32, 32)
        assert set(edges.unique().tolist()) == {-1.0, 1.0}
        assert garments.min() >= -1 and garments.max() <= 1
        assert torch.equal(edges, garment_edges(garments))
    assert data.info.in_channels == 1 and data.info.extra["out_channels"] == 1
    out = pix2pix(data.info)(data.val.tensors[0][:2])
    assert out.shape == (2, 1, 32, 32)


def test_fashion_unpaired_splits_train_garments_between_the_domains(tmp_path: Path) -> None:
    _fake_mnist(tmp_path)
    paired = fashion_edges(str(tmp_path), limit_train=30, val_size=10)
    data = fashion_unpaired(str(tmp_path), limit_train=30, val_size=10)
    assert len(data.train) == 15 and data.info.extra["paired"] is False
    a_edges = torch.stack([data.train[i][0] for i in range(15)])
    b_edges = garment_edges(torch.stack([data.train[i][1] for i in range(15)]))
    # Every training garment lands in exactly one domain: A keeps only its edges, B only the garment.
    found = torch.cat([a_edges, b_edges]).flatten(1)
    expected = paired.train.tensors[0].flatten(1)
    assert sorted(map(tuple, found.tolist())) == sorted(map(tuple, expected.tolist()))
    assert not (a_edges.flatten(1)[:, None] == b_edges.flatten(1)[None]).all(-1).any()
    for split, reference in ((data.val, paired.val), (data.test, paired.test)):
        assert all(torch.equal(x, y) for x, y in zip(split.tensors, reference.tensors, strict=True))
    assert torch.equal(
        fashion_unpaired(str(tmp_path), limit_train=30, val_size=10).train[3][1], data.train[3][1]
    )
    out = cyclegan(data.info)(data.val.tensors[0][:2])
    assert out.shape == (2, 1, 32, 32)


def test_garment_edges_outline_a_garment_on_the_image_border() -> None:
    image = -torch.ones(1, 1, 32, 32)
    image[0, 0, 8:24, :16] = 1  # a white block touching the left border on a black background
    edges = garment_edges(image)[0, 0] > 0
    assert edges[8:24, 0].all()  # the border side is outlined, as on a black canvas
    assert not edges[:7].any() and not edges[25:].any() and not edges[:, 17:].any()  # nothing else
