"""The preprocessing a pretrained model expects, as options every classification dataset takes.

A network trained with some input statistics and framing loses accuracy on inputs prepared otherwise
(an ImageNet model on inputs in [-1, 1], an MNIST model on standardised digits) before any pruning. So
``digits``, ``fashion-mnist``, ``folder:`` and ``torchvision:`` take, as ``--data-arg KEY=VALUE``:

- ``norm``: a named preset (:data:`NORM_PRESETS`), or ``train`` (the train split's own statistics; only
  in-memory datasets, whose pixels are all in memory, can compute them); or ``mean`` and ``std``: one
  value for every channel or one per channel. The default is ``train`` for in-memory data and
  ``inception`` (mean 0.5, std 0.5: [-1, 1]) for data read from image files;
- ``crop_pct``: evaluation framing: the image is resized, aspect ratio kept, to cover ``floor(size /
  crop_pct)`` and centre-cropped to ``size`` (ImageNet's recipe is 0.875; the default 1.0 keeps the
  whole image where its aspect ratio is the target's);
- ``interpolation``: ``bilinear`` (default) or ``bicubic``;
- ``augment``: the train split only gets a random resized crop (scale :data:`RANDOM_CROP_SCALE`) and a
  horizontal flip; val and test always get the deterministic evaluation transform.

These are the keys of a timm model's pretrained config, so it can be passed through as it is.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from automl_prune.errors import DataError

NORM_PRESETS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "inception": ((0.5,), (0.5,)),  # [-1, 1]; also what file-backed data gets by default
    "mnist": ((0.1307,), (0.3081,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}
NORM_OPTIONS = {"norm", "mean", "std"}
TRAIN_STATS = "train"  # the norm that standardises with the train split's own per-channel statistics
INTERPOLATIONS = ("bilinear", "bicubic")
# Milder than ImageNet's (0.08, 1): a pruned model is fine-tuned for a few epochs, often on small images.
RANDOM_CROP_SCALE = (0.25, 1.0)

Factory = TypeVar("Factory", bound=Callable[..., Any])


def channel_values(value: Any, name: str) -> tuple[float, ...]:
    """``0.5``, ``"0.485,0.456,0.406"`` (how ``--data-arg`` delivers a list) or a list -> floats."""
    if isinstance(value, str):
        items: Sequence[Any] = value.strip("[]() ").split(",")
    else:
        items = value if isinstance(value, list | tuple) else [value]
    try:
        values = tuple(float(item) for item in items)
    except (TypeError, ValueError):
        values = ()
    if not values:
        raise DataError(
            f"{name}={value!r} is not a number or a comma-separated list of numbers",
            f"write e.g. --data-arg {name}=0.5 (every channel) or {name}=0.485,0.456,0.406 (per channel)",
        )
    return values


@dataclass(frozen=True)
class Preprocessing:
    """The preprocessing a dataset applies, resolved: per-channel statistics and the framing.

    :meth:`extra` is what ``DataInfo.extra`` records, so the run and the saved model say exactly what
    evaluation needs.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    norm: str | None = None  # the preset's name; None for explicit mean/std
    crop_pct: float = 1.0
    interpolation: str = "bilinear"
    augment: bool = False

    def extra(self, image_size: tuple[int, int]) -> dict[str, Any]:
        """``mean``/``std`` (as every dataset records them) and the whole ``preprocessing``."""
        preprocessing = {
            **dataclasses.asdict(self),
            "mean": list(self.mean),
            "std": list(self.std),
            "resize": list(cover_box(image_size, self.crop_pct)),
        }
        return {"mean": list(self.mean), "std": list(self.std), "preprocessing": preprocessing}


@dataclass(frozen=True)
class ImageOptions:
    """The preprocessing options as given (``--data-arg``); checked here, before any data is read.

    ``default_norm`` is the dataset's, not an option: it applies when neither norm nor mean/std is given.
    """

    norm: str | None = None
    mean: Any = None
    std: Any = None
    crop_pct: float = 1.0
    interpolation: str = "bilinear"
    augment: bool = False
    default_norm: str = "inception"

    def __post_init__(self) -> None:
        if self.norm is not None and (self.mean is not None or self.std is not None):
            raise DataError(
                f"norm={self.norm} and mean/std were both given",
                "give either --data-arg norm=PRESET or --data-arg mean=... --data-arg std=..., not both",
            )
        if (self.mean is None) != (self.std is None):
            given, missing = ("mean", "std") if self.std is None else ("std", "mean")
            raise DataError(f"{given} was given without {missing}", f"give {missing} too, or use norm=PRESET")
        if self.norm is not None and self.norm != TRAIN_STATS and self.norm not in NORM_PRESETS:
            raise DataError(
                f"unknown normalisation preset norm={self.norm!r}",
                f"use one of {', '.join([*NORM_PRESETS, TRAIN_STATS])}, or give mean=... and std=...",
            )
        if isinstance(self.crop_pct, bool) or not isinstance(self.crop_pct, int | float):
            raise DataError(f"crop_pct={self.crop_pct!r} is not a number", "write e.g. crop_pct=0.875")
        if not 0 < self.crop_pct <= 1:
            raise DataError(
                f"crop_pct={self.crop_pct} is outside (0, 1]",
                "crop_pct is the fraction of the resized image kept by the centre crop: e.g. 0.875 or 1",
            )
        if self.interpolation not in INTERPOLATIONS:
            raise DataError(
                f"unknown interpolation {self.interpolation!r}", f"use one of {', '.join(INTERPOLATIONS)}"
            )
        if not isinstance(self.augment, bool):
            raise DataError(f"augment={self.augment!r} is not true or false", "write augment=true or false")
        if self.mean is not None:
            self._explicit()  # malformed numbers are reported now, the channel count once it is known

    @property
    def preset(self) -> str | None:
        """The preset in effect: the one given, else the dataset's default; None for explicit mean/std."""
        return None if self.mean is not None else self.norm or self.default_norm

    def _explicit(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        mean, std = channel_values(self.mean, "mean"), channel_values(self.std, "std")
        if min(std) <= 0:
            raise DataError(f"std={self.std!r} has a value <= 0", "give std values above 0 (e.g. std=0.25)")
        return mean, std

    def statistics(self, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """Per-channel (mean, std) for ``channels``-channel data; None for ``norm=train``."""
        if self.mean is not None:
            stats = self._explicit()
        elif self.preset == TRAIN_STATS:
            return None
        else:
            stats = NORM_PRESETS[self.preset]
        counts = {len(values) for values in stats}
        if not counts <= {1, channels}:
            if self.mean is None:
                raise DataError(
                    f"the preset norm={self.preset} has {max(counts)} channels, the data {channels}",
                    "give --data-arg mean=... std=... with one value, or load the images with channels=3",
                )
            raise DataError(
                f"mean has {len(stats[0])} and std {len(stats[1])} values for {channels}-channel data",
                f"give one value (for every channel) or {channels}",
            )
        return tuple(values * channels if len(values) == 1 else values for values in stats)  # type: ignore[return-value]

    def resolve(self, channels: int, train_stats: Sequence[Sequence[float]] | None = None) -> Preprocessing:
        """The preprocessing for ``channels``-channel data; ``train_stats`` (mean, std) is used for
        ``norm=train``, which data without them (read from files) rejects."""
        stats = self.statistics(channels)
        if stats is None:
            if train_stats is None:
                raise DataError(
                    "norm=train is only for in-memory datasets (digits, fashion-mnist): image files are "
                    "not all read before training, so their statistics are unknown",
                    f"use a preset ({', '.join(NORM_PRESETS)}) or give mean=... and std=...",
                )
            stats = tuple(tuple(values) for values in train_stats)  # type: ignore[assignment]
        return Preprocessing(
            *stats,
            norm=self.preset,
            crop_pct=self.crop_pct,
            interpolation=self.interpolation,
            augment=self.augment,
        )


def override_options(stored: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """Dataset options ``given`` over ``stored`` ones (a saved model's); a normalisation given (``norm``,
    or ``mean`` and ``std``) replaces the stored one whole, so the two never meet as a conflict."""
    if NORM_OPTIONS & given.keys():
        stored = {key: value for key, value in stored.items() if key not in NORM_OPTIONS}
    return {**stored, **given}


def takes_image_options(*, norm: str, augment: bool) -> Callable[[Factory], Factory]:
    """Give a dataset factory the :class:`ImageOptions` fields as keyword options (with this dataset's
    defaults), so ``--data-arg mean=...`` reaches it and a wrong option name lists them; the factory
    receives them checked, as its ``preprocess`` argument."""
    defaults = ImageOptions(augment=augment, default_norm=norm)
    names = [f.name for f in dataclasses.fields(ImageOptions) if f.name != "default_norm"]

    def decorate(factory: Factory) -> Factory:
        @functools.wraps(factory)
        def with_image_options(*args: Any, **options: Any) -> Any:
            given = {name: options.pop(name) for name in names if name in options}
            return factory(*args, preprocess=dataclasses.replace(defaults, **given), **options)

        signature = inspect.signature(factory)
        own = [p for p in signature.parameters.values() if p.name != "preprocess"]
        shown = {**{name: getattr(defaults, name) for name in names}, "norm": norm}
        added = [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=shown[name]) for name in names
        ]
        with_image_options.__signature__ = signature.replace(parameters=own + added)  # type: ignore[attr-defined]
        return with_image_options  # type: ignore[return-value]

    return decorate


def cover_box(target: tuple[int, int], crop_pct: float) -> tuple[int, int]:
    """The (H, W) an image is resized to cover before the centre crop of ``target``: ``floor(target /
    crop_pct)``, rounded down as timm does, so a timm model's config frames images as timm would."""
    return (math.floor(target[0] / crop_pct), math.floor(target[1] / crop_pct))


def cover_size(source: tuple[int, int], target: tuple[int, int], crop_pct: float) -> tuple[int, int]:
    """(H, W) to resize a ``source``-sized image to, aspect ratio kept, so that it covers
    :func:`cover_box`: the side that needs the most scaling becomes its box side (for a square target:
    the shorter side becomes ``floor(size / crop_pct)``), the other is scaled alike, rounded down."""
    box = cover_box(target, crop_pct)
    lead = max((0, 1), key=lambda d: box[d] / source[d])
    height, width = (
        box[d] if d == lead else max(target[d], int(source[d] * box[lead] / source[lead]))  # max: float error
        for d in (0, 1)
    )
    return height, width
