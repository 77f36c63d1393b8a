"""What the library model families (``torchvision:NAME``, ``timm:NAME``) share: the data's classes and
an error for a name the library does not have."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from automl_prune.data.base import DataInfo
from automl_prune.errors import ModelError

CLOSE = 3  # close matches named in an unknown-name error


def classifier_classes(info: DataInfo) -> int:
    """The number of outputs a classifier for ``info`` needs; data without classes is an error."""
    if info.num_classes < 1:
        raise ModelError(
            f"a classifier needs classes, but dataset {info.name!r} ({info.task}) has none",
            "use a classification dataset, or a model for its task (`automl-prune plugins` lists them)",
        )
    return info.num_classes


def unknown_model(family: str, name: str, known: Iterable[str], listing: str) -> ModelError:
    """The error for ``family:name`` when the library has no model ``name``: the closest names it has, and
    how to list them all (``listing``, e.g. ``timm.list_models('vit_*')``; timm alone has over 1000)."""
    close = difflib.get_close_matches(name, list(known), n=CLOSE, cutoff=0.5)
    hint = f"did you mean {', '.join(f'{family}:{c}' for c in close)}? " if close else ""
    return ModelError(f"{family} has no classifier {name!r}", f"{hint}{listing} lists the names")
