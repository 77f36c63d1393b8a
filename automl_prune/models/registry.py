"""Model references -> modules.

A registry name is built as ``factory(info, **kwargs)``, so the zoo adapts classes and channels to the
data. A name with a colon is the user's own model, ``package.module:factory``, called as
``factory(**kwargs)``: it knows its own shapes. Weights are never downloaded: ``load_weights`` reads a
local safetensors or torch state-dict file.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torch import nn

from automl_prune.data.base import DataInfo
from automl_prune.errors import AutomlPruneError, ModelError
from automl_prune.models.base import ModelRef
from automl_prune.plugins import get_plugins


def import_factory(target: str) -> Callable[..., Any]:
    """``"package.module:factory"`` (the attribute may be dotted, e.g. ``module:Class.build``)."""
    module_name, _, attr = target.partition(":")
    fix = f"make {module_name!r} importable (installed, or on PYTHONPATH) and check the name after ':'"
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except Exception as exc:  # ImportError, AttributeError, or any error raised by the module's import
        raise ModelError(f"cannot import model factory {target!r}: {type(exc).__name__}: {exc}", fix) from exc
    if not callable(obj):
        raise ModelError(f"model factory {target!r} is not callable", fix)
    return obj


def split_name(name: str) -> tuple[str, str | None]:
    """``"diffusers:/models/unet"`` -> ``("diffusers", "/models/unet")``; ``"resnet20"`` -> (it, None)."""
    family, sep, arg = name.partition(":")
    return (family, arg) if sep else (name, None)


def outside_code(ref: ModelRef) -> str | None:
    """What building ``ref`` would run besides a registered model factory, in words; None when ``ref``
    is a plain registered name or a family that only looks its argument up as a name in a library
    (registered with ``by_name=True``: ``torchvision:resnet18``, ``timm:convnext_atto``). A saved model's
    spec names its ``ref``, so loading one that needs more (a ``module:factory`` to import, a local
    directory to read a config from) must be opted into."""
    models = get_plugins().models
    family, arg = split_name(ref.name)
    if arg is None or (family in models and models.entry(family).meta.get("by_name")):
        return None
    if family in models:
        return f"the {family!r} factory reading {arg!r}"
    return f"the factory {ref.name!r} (imported and called)"


def _bind(factory: Callable[..., Any], name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    """Check the keyword arguments against the factory's signature before calling it."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # builtins without a signature: the call itself checks
        return
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise ModelError(
            f"model {name!r} does not take the arguments {dict(kwargs)}: {exc}",
            "check the model's keyword arguments (--model-arg) against its factory",
        ) from exc


def build_model(ref: ModelRef, info: DataInfo) -> nn.Module:
    """An untrained model for ``ref`` on data described by ``info``.

    ``name:arg`` with a registered ``name`` (``diffusers:PATH``) calls that factory as
    ``factory(info, arg, **kwargs)``; any other ``module:factory`` is the user's importable factory.
    The keyword arguments are checked against the factory's signature before it is called.
    """
    models = get_plugins().models
    family, arg = split_name(ref.name)
    if arg is not None and family in models:
        factory, args = models.get(family), (info, arg)
    elif arg is not None:
        factory, args = import_factory(ref.name), ()
    elif models.entry(ref.name).meta.get("by_name"):
        raise ModelError(f"{ref.name!r} is a family of models", f"name one: --model {ref.name}:NAME")
    else:
        factory, args = models.get(ref.name), (info,)
    _bind(factory, ref.name, args, ref.kwargs)
    try:
        model = factory(*args, **ref.kwargs)
    except AutomlPruneError:
        raise
    except Exception as exc:  # a wrong keyword or an inconsistent shape, reported without its traceback
        raise ModelError(
            f"cannot build model {ref.name!r} with {ref.kwargs}: {type(exc).__name__}: {exc}",
            "check the model's keyword arguments (--model-arg) against its factory",
        ) from exc
    if not isinstance(model, nn.Module):
        raise ModelError(
            f"model factory {ref.name!r} returned {type(model).__name__}, not a torch.nn.Module",
            "return the module itself from the factory",
        )
    return model


def model_task(name: str) -> str | None:
    """The task a registered model (or model family) is for; None for a user's ``module:factory``."""
    models = get_plugins().models
    family, _ = split_name(name)
    return models.entry(family).meta.get("task") if family in models else None


def default_preprocessing(name: str) -> dict[str, Any]:
    """The input preprocessing a model family states for ``name`` (``timm:NAME``: its pretrained config's
    mean, std, crop_pct, interpolation, ...), else nothing."""
    models = get_plugins().models
    family, arg = split_name(name)
    if arg is None or family not in models:
        return {}
    preprocessing = models.entry(family).meta.get("preprocessing")
    return preprocessing(arg) if preprocessing is not None else {}


def default_weights(name: str) -> Path | None:
    """The weights a model family brings itself (``diffusers:PATH``: the directory's), else None."""
    models = get_plugins().models
    family, arg = split_name(name)
    if arg is None or family not in models:
        return None
    weights = models.entry(family).meta.get("weights")
    return weights(arg) if weights is not None else None
