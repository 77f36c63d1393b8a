"""automl_prune: plugin-based AutoML compression for computer-vision models.

Importing the package is light (no torch): :class:`Candidate`, :class:`Context` and :class:`Strategy`
load :mod:`automl_prune.strategy`, and with it torch, on first access.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from automl_prune.hookspecs import hookimpl

if TYPE_CHECKING:
    from torch import nn

    from automl_prune.strategy import Candidate, Context, Strategy

__version__ = "0.1.0"

_LAZY = {"Candidate", "Context", "Strategy"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from automl_prune import strategy

        return getattr(strategy, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load(path: str | Path, *, trust_code: bool = False) -> nn.Module:
    """Rebuild a pruned model saved by automl_prune (architecture spec JSON + safetensors), or a composite
    (a manifest, its router and one such directory per part); nothing is unpickled. A model pruned from
    a ``module:factory`` or a local diffusers directory loads only with ``trust_code=True``: building it
    imports or reads what its (editable) spec names."""
    from automl_prune.pruning.persistence import load_pruned

    return load_pruned(path, trust_code=trust_code)


__all__ = ["Candidate", "Context", "Strategy", "__version__", "hookimpl", "load"]
