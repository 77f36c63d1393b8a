"""``--data`` specs -> splits: ``name`` or ``name:arg`` looked up in the plugins' dataset registry."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

from automl_prune.data.base import DataSplits
from automl_prune.errors import AutomlPruneError, DataError
from automl_prune.plugins import get_plugins


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``"folder:/data/x"`` -> ``("folder", "/data/x")``; only the first colon separates."""
    name, _, arg = spec.partition(":")
    return name.strip(), arg or None


def load_dataset(spec: str, **options: Any) -> DataSplits:
    """Load the dataset ``spec`` names, passing ``arg`` and ``options`` to its factory.

    ``info.extra`` records the spec, the options and the split sizes, so that a cached base model is
    keyed by exactly the data it was trained on.
    """
    name, arg = parse_spec(spec)
    factory = get_plugins().datasets.get(name)
    try:
        inspect.signature(factory).bind(arg, **options)
    except TypeError as exc:
        problem = f"dataset {name!r} does not take these options: {exc}"
        raise DataError(problem, _options_fix(factory)) from None
    try:
        splits = factory(arg, **options)
    except AutomlPruneError:
        raise
    except Exception as exc:  # a plugin's bug or an unreadable file: one clear line, not its traceback
        raise DataError(
            f"cannot load dataset {spec!r}: {type(exc).__name__}: {exc}", "check the path and the options"
        ) from exc
    sizes = {split: len(getattr(splits, split)) for split in ("train", "val", "test")}
    extra = {**splits.info.extra, "spec": spec, "options": options, "sizes": sizes}
    splits.info = dataclasses.replace(splits.info, extra=extra)
    return splits


def _options_fix(factory: Any) -> str:
    params = [p for p in inspect.signature(factory).parameters.values() if p.kind is p.KEYWORD_ONLY]
    return "its options are: " + (", ".join(f"{p.name}={p.default!r}" for p in params) or "(none)")
