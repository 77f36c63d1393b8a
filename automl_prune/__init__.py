"""automl_prune: plugin-based AutoML compression for computer-vision models."""

from pathlib import Path

from torch import nn

from automl_prune.hookspecs import hookimpl
from automl_prune.strategy import Candidate, Context, Strategy

__version__ = "0.1.0"


def load(path: str | Path, *, trust_code: bool = False) -> nn.Module:
    """Rebuild a pruned model saved by automl_prune (architecture spec JSON + safetensors), or a composite
    (a manifest, its router and one such directory per part); nothing is unpickled. A model pruned from
    a ``module:factory`` or a local diffusers directory loads only with ``trust_code=True``: building it
    imports or reads what its (editable) spec names."""
    from automl_prune.pruning.persistence import load_pruned

    return load_pruned(path, trust_code=trust_code)


__all__ = ["Candidate", "Context", "Strategy", "__version__", "hookimpl", "load"]
