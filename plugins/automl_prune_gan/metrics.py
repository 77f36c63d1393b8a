"""Full-reference image-quality metrics for image-to-image generators.

Generators here end in ``tanh``, so outputs and targets are ``(N, C, H, W)`` float tensors in [-1, 1].
PSNR and SSIM are defined on images with a known data range, so both map to [0, 1] first (values outside
[-1, 1] are clipped, as they would be when the image is saved) and use data range 1. L1 stays on the
[-1, 1] scale so it is the same number as the L1 term of a pix2pix-style training loss.

Every metric has a ``*_per_image`` variant returning an ``(N,)`` tensor (for per-sample reports and
confidence intervals) and a batch variant returning the mean of those as a python float. They run under
``torch.no_grad``: they are evaluation metrics, not losses.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from automl_prune.api import MetricError

#: MSE floor for PSNR. Identical images have MSE 0 and an infinite PSNR, which would turn any mean over
#: images or trials into ``inf``; flooring the MSE at 1e-10 caps a single image's PSNR at 100 dB instead.
PSNR_MSE_FLOOR = 1e-10
PSNR_MAX_DB = 10.0 * math.log10(1.0 / PSNR_MSE_FLOOR)

#: Standard SSIM constants (Wang et al. 2004), the defaults of skimage and of most papers.
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> None:
    """Fail early with both shapes, instead of a broadcast that silently computes something else."""
    for what, t in (("pred", pred), ("target", target)):
        if not isinstance(t, torch.Tensor) or t.dim() != 4 or not t.is_floating_point():
            got = f"{tuple(t.shape)} {t.dtype}" if isinstance(t, torch.Tensor) else type(t).__name__
            raise MetricError(
                f"image metric needs {what} as a float (N, C, H, W) tensor, got {got}",
                "pass a batch of images, e.g. img.unsqueeze(0) for a single (C, H, W) image",
            )
    if pred.shape != target.shape:
        raise MetricError(
            f"pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}",
            "compare generator outputs with targets of the same batch size, channels and resolution",
        )
    if pred.numel() == 0:
        raise MetricError("image metric got an empty batch", "pass at least one image with H, W >= 1")


def _work_dtype(t: torch.Tensor) -> torch.dtype:
    """float64 inputs stay float64; half/bfloat16 are promoted so the sums do not lose precision."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """Map [-1, 1] images to [0, 1], clipping what is outside (what saving the image would do)."""
    return ((images.to(_work_dtype(images)) + 1.0) * 0.5).clamp(0.0, 1.0)


@torch.no_grad()
def l1_per_image(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error of each image on the [-1, 1] scale (no clipping), shape (N,)."""
    _check_pair(pred, target)
    dt = _work_dtype(pred)
    return (pred.to(dt) - target.to(dt)).abs().flatten(1).mean(dim=1)


def l1(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Mean absolute error over the batch on the [-1, 1] scale (the pix2pix L1 term)."""
    return float(l1_per_image(pred, target).mean())


@torch.no_grad()
def psnr_per_image(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of each image, on [0, 1]-mapped images with data range 1, shape (N,) float64.

    The MSE is floored at :data:`PSNR_MSE_FLOOR`, so identical images give :data:`PSNR_MAX_DB` (100 dB)
    instead of ``inf``.
    """
    _check_pair(pred, target)
    p = to_unit_range(pred).to(torch.float64)
    t = to_unit_range(target).to(torch.float64)
    mse = (p - t).pow(2).flatten(1).mean(dim=1).clamp_min(PSNR_MSE_FLOOR)
    return -10.0 * torch.log10(mse)


def psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Mean over images of the per-image PSNR in dB (not the PSNR of the pooled MSE)."""
    return float(psnr_per_image(pred, target).mean())


def ssim_window_size(height: int, width: int) -> int:
    """The window SSIM uses for an image: 11, or the largest odd size that fits a smaller image.

    skimage refuses images smaller than the window; generators for tiny images (e.g. 8x8 feature maps in
    tests) still need a number, so the window shrinks to ``min(11, H, W)`` rounded down to odd, keeping
    sigma 1.5 and renormalising the truncated gaussian. For images of at least 11x11 this is exactly the
    standard SSIM.
    """
    size = min(SSIM_WINDOW, height, width)
    return size if size % 2 == 1 else size - 1


def _gaussian_window(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Normalised 1-D gaussian taps, the same as scipy's gaussian_filter with truncate 3.5 at size 11."""
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _filter(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable depthwise gaussian filter, 'valid' region only (skimage crops the padded border)."""
    c = x.shape[1]
    x = F.conv2d(x, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return F.conv2d(x, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)


@torch.no_grad()
def ssim_per_image(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Standard SSIM of each image on [0, 1]-mapped images (data range 1), shape (N,).

    Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03, population (not sample) covariances; the SSIM map
    is averaged over the valid region of each channel and then over channels, which is what
    ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=1, channel_axis=...)`` computes. Images smaller than the
    window use a smaller one, see :func:`ssim_window_size`.
    """
    _check_pair(pred, target)
    x = to_unit_range(pred)
    y = to_unit_range(target).to(x.dtype)
    size = ssim_window_size(x.shape[2], x.shape[3])
    g = _gaussian_window(size, SSIM_SIGMA, x.dtype, x.device)
    c1 = SSIM_K1**2
    c2 = SSIM_K2**2

    mu_x = _filter(x, g)
    mu_y = _filter(y, g)
    var_x = _filter(x * x, g) - mu_x * mu_x
    var_y = _filter(y * y, g) - mu_y * mu_y
    cov_xy = _filter(x * y, g) - mu_x * mu_y

    num = (2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)
    den = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    return (num / den).mean(dim=(2, 3)).mean(dim=1)


def ssim(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Mean SSIM over the batch, see :func:`ssim_per_image`."""
    return float(ssim_per_image(pred, target).mean())


__all__ = [
    "PSNR_MAX_DB",
    "PSNR_MSE_FLOOR",
    "MetricError",
    "l1",
    "l1_per_image",
    "psnr",
    "psnr_per_image",
    "ssim",
    "ssim_per_image",
    "ssim_window_size",
    "to_unit_range",
]
