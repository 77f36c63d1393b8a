"""Frechet distance between feature distributions, and FID on top of a feature encoder.

FID is the Frechet distance between gaussians fitted to features of real and generated images. The
encoders that produce the features, and the name each one must be reported with, are in
:mod:`automl_prune.feature_encoders`.
"""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np
import scipy.linalg
import torch

from automl_prune.errors import MetricError
from automl_prune.feature_encoders import FeatureEncoder, check_images

#: Largest imaginary part on the diagonal of sqrtm(S_a S_b) accepted as rounding noise. The exact root has
#: a real trace (the product's eigenvalues are real and >= 0); larger imaginary parts mean sqrtm failed.
_MAX_IMAG = 1e-3

ArrayLike = torch.Tensor | np.ndarray


def _as_features(feats: ArrayLike, which: str) -> np.ndarray:
    """float64 ``(N, D)`` numpy array, with errors that name which side is wrong."""
    if isinstance(feats, torch.Tensor):
        feats = feats.detach().to(device="cpu", dtype=torch.float64).numpy()
    arr = np.asarray(feats, dtype=np.float64)
    if arr.ndim != 2:
        raise MetricError(
            f"Frechet distance needs (N, D) features for {which}, got shape {arr.shape}",
            "pass encoder features, one row per image",
        )
    if arr.shape[0] < 2:
        raise MetricError(
            f"Frechet distance needs at least 2 samples per side to estimate a covariance, "
            f"{which} has {arr.shape[0]}",
            "evaluate on more images (FID is biased below a few thousand; use the same count for all runs)",
        )
    if not np.isfinite(arr).all():
        raise MetricError(
            f"{which} features contain NaN or inf", "check the generator outputs and the encoder"
        )
    return arr


def _sqrtm(mat: np.ndarray) -> np.ndarray:
    """scipy's sqrtm without its "matrix is singular" warning: singular covariances are expected with few
    samples, and the caller checks the result (finite, near-real) instead."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        return scipy.linalg.sqrtm(mat)


def _trace_sqrt_product_sqrtm(cov_a: np.ndarray, cov_b: np.ndarray, eps: float) -> float:
    """Tr sqrtm(S_a S_b) with scipy's sqrtm, the standard FID computation.

    With fewer samples than dimensions the covariances are singular and sqrtm can return inf/NaN or a
    clearly complex root; then ``eps`` is added to both diagonals (a tiny ridge that makes the product
    well conditioned and changes the distance by about ``eps * D``) and the root is recomputed. Imaginary
    parts below 1e-3 are rounding noise of a real root and are dropped.
    """
    root = _sqrtm(cov_a @ cov_b)
    bad = not np.isfinite(root).all() or (
        np.iscomplexobj(root) and np.abs(np.diagonal(root).imag).max() > _MAX_IMAG
    )
    if bad:
        ridge = eps * np.eye(cov_a.shape[0])
        root = _sqrtm((cov_a + ridge) @ (cov_b + ridge))
    if not np.isfinite(root).all():
        raise MetricError(
            "Frechet distance: the matrix square root of the covariance product is not finite",
            "use more samples than feature dimensions, or frechet_distance(..., method='svd')",
        )
    if np.iscomplexobj(root):
        imag = np.abs(np.diagonal(root).imag).max()
        if imag > _MAX_IMAG:
            raise MetricError(
                f"Frechet distance: sqrtm of the covariance product has imaginary part {imag:.3g}",
                "use more samples, a larger eps, or frechet_distance(..., method='svd')",
            )
        root = root.real
    return float(np.trace(root))


def frechet_distance(
    feats_a: ArrayLike,
    feats_b: ArrayLike,
    eps: float = 1e-6,
    method: Literal["sqrtm", "svd"] = "sqrtm",
) -> float:
    """Frechet distance ``||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 sqrtm(S_a S_b))`` of two feature sets.

    Computed in float64 with unbiased (N - 1) covariances. ``method="sqrtm"`` is the standard computation
    (scipy's sqrtm, with the ``eps`` fallback described in :func:`_trace_sqrt_product_sqrtm`); it costs
    about 10 s for 2048-d features on 2 CPU cores whatever the sample count. ``method="svd"`` gives the
    same value exactly, without forming D x D matrices: the eigenvalues of ``S_a S_b`` are the squared
    singular values of ``A B^T / sqrt((N_a - 1)(N_b - 1))`` (A, B the centred features), so the trace of
    the root is that matrix's nuclear norm; it is much faster when there are fewer samples than a few
    thousand. Tiny negative results from rounding are returned as 0.
    """
    a = _as_features(feats_a, "the first set")
    b = _as_features(feats_b, "the second set")
    if a.shape[1] != b.shape[1]:
        raise MetricError(
            f"feature sets have different dimensions: {a.shape[1]} vs {b.shape[1]}",
            "compute both sets with the same encoder",
        )
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    ac, bc = a - mu_a, b - mu_b
    na, nb = a.shape[0] - 1, b.shape[0] - 1
    diff = mu_a - mu_b
    trace_a = float((ac * ac).sum() / na)
    trace_b = float((bc * bc).sum() / nb)
    if method == "sqrtm":
        tr_root = _trace_sqrt_product_sqrtm(ac.T @ ac / na, bc.T @ bc / nb, eps)
    elif method == "svd":
        tr_root = float(np.linalg.svd(ac @ bc.T / np.sqrt(na * nb), compute_uv=False).sum())
    else:
        raise MetricError(f"unknown Frechet distance method {method!r}", "use 'sqrtm' or 'svd'")
    return max(float(diff @ diff) + trace_a + trace_b - 2.0 * tr_root, 0.0)


@torch.no_grad()
def encode_in_batches(encoder: FeatureEncoder, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Features of many images, ``batch_size`` at a time, so large evaluation sets fit in memory."""
    check_images(images, f"encoder {getattr(encoder, 'name', type(encoder).__name__)!r}")
    if batch_size < 1:
        raise MetricError(f"batch_size must be >= 1, got {batch_size}", "pass e.g. batch_size=64")
    return torch.cat([encoder.encode(chunk) for chunk in images.split(batch_size)])


def fid(
    encoder: FeatureEncoder,
    fake_images: torch.Tensor,
    real_features_or_images: ArrayLike,
    batch_size: int = 64,
    eps: float = 1e-6,
    method: Literal["sqrtm", "svd"] = "sqrtm",
) -> float:
    """Frechet distance between ``encoder`` features of generated and real images.

    ``real_features_or_images`` is either ``(N, D)`` features computed once with the same encoder (cheap
    when the real set is reused across trials) or ``(N, C, H, W)`` images in [-1, 1]. Report the value with
    ``encoder.name``: FIDs from different encoders or sample counts are not comparable.
    """
    fake = encode_in_batches(encoder, fake_images, batch_size)
    real = real_features_or_images
    if isinstance(real, np.ndarray) and real.ndim == 4:
        real = torch.from_numpy(real)
    if isinstance(real, torch.Tensor) and real.dim() == 4:
        real = encode_in_batches(encoder, real, batch_size)
    return frechet_distance(fake, real, eps=eps, method=method)


__all__ = ["encode_in_batches", "fid", "frechet_distance"]
