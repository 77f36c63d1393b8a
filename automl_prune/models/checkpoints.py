"""Local weights -> modules: strict loads, and pretrained backbones under a new classifier head.

Weights are never downloaded: a checkpoint is a local safetensors or torch state-dict file. Every load
is strict (every key present, none extra, every shape equal) with one exception users need daily: an
ImageNet checkpoint on a dataset with other classes. :func:`load_pretrained` then loads everything but
the classifier head strictly and keeps the model's freshly initialised head (the last linear or conv
layer, which the factory built for the data's classes), and says which layer it replaced. A mismatch
anywhere else is still an error.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from automl_prune.errors import CheckpointError

SHOWN = 3  # mismatches listed in an error; the rest are counted
WRAPPER_KEYS = ("state_dict", "model")  # checkpoints that wrap the state dict (Lightning, many repos)


@dataclass(frozen=True)
class HeadReplacement:
    """The classifier head a pretrained checkpoint did not fit: ``layer`` kept fresh for the data."""

    layer: str
    checkpoint_shape: tuple[int, ...]
    model_shape: tuple[int, ...]

    def __str__(self) -> str:
        return (
            f"replaced the classifier head {self.layer!r}: checkpoint weight {self.checkpoint_shape} -> "
            f"{self.model_shape} for the data's {self.model_shape[0]} classes"
        )


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a ``.safetensors`` file, else a ``torch.save`` file (read with weights_only)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"weights file {path} not found", "check the path given to --weights")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path))
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch and safetensors raise many types for a truncated or foreign file
        raise CheckpointError(
            f"cannot read weights file {path}: {type(exc).__name__}: {str(exc)[:200].strip()}",
            "the file is corrupt or not a state dict; save one with torch.save(model.state_dict(), path) "
            "or safetensors.torch.save_file",
        ) from exc
    wrapped = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj, Mapping) and k in obj), None)
    state = wrapped if isinstance(wrapped, Mapping) else obj
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(
            f"weights file {path} holds a {type(state).__name__}, not a state dict of tensors",
            "save model.state_dict(), not the model object",
        )
    return dict(state)


def file_digest(path: str | Path) -> str:
    """A short hash of a weights file's bytes, so a cache keyed by it notices a changed file."""
    digest = hashlib.sha256()
    with open(Path(path).expanduser(), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def classifier_head(model: nn.Module) -> str | None:
    """The name of the model's classifier head: its last linear or conv layer in definition order
    (``fc`` of a ResNet, ``classifier.1`` of a MobileNet, ``head`` of a timm ViT)."""
    layers = [name for name, m in model.named_modules() if isinstance(m, nn.Linear | nn.modules.conv._ConvNd)]
    return layers[-1] if layers else None


def _listed(items: list[str]) -> str:
    more = f" (and {len(items) - SHOWN} more)" if len(items) > SHOWN else ""
    return ", ".join(items[:SHOWN]) + more


def _problems(
    expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]
) -> dict[str, list[str]]:
    """Missing keys, unexpected keys and shape mismatches, each as a list of key descriptions."""
    return {
        "missing": [k for k in expected if k not in state],
        "unexpected": [k for k in state if k not in expected],
        "wrong shape": [
            f"{k} {tuple(state[k].shape)} vs model {tuple(v.shape)}"
            for k, v in expected.items()
            if k in state and state[k].shape != v.shape
        ],
    }


def _misfit(path: str | Path, model: nn.Module, problems: dict[str, list[str]]) -> CheckpointError:
    said = "; ".join(f"{kind} {_listed(keys)}" for kind, keys in problems.items() if keys)
    return CheckpointError(
        f"weights file {path} does not fit {type(model).__name__}: {said}",
        "use weights saved from the same architecture (same --model and model arguments, same input "
        "channels); weights for another number of classes load with their classifier head replaced",
    )


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load ``path`` into ``model`` strictly: every key present, none extra, every shape equal."""
    state = read_state_dict(path)
    problems = _problems(model.state_dict(), state)
    if any(problems.values()):
        raise _misfit(path, model, problems)
    model.load_state_dict(state, strict=True)
    return model


def load_pretrained(model: nn.Module, path: str | Path) -> HeadReplacement | None:
    """Load ``path`` into ``model``; where only the classifier head's shapes differ (another number of
    classes), load the rest strictly and keep the model's own head. Returns what was replaced, if
    anything; any other mismatch raises the strict load's error."""
    state = read_state_dict(path)
    expected = model.state_dict()
    head = classifier_head(model)
    problems = _problems(expected, state)
    if not any(problems.values()):
        model.load_state_dict(state, strict=True)
        return None
    head_keys = {k for k in expected if head is not None and k.rpartition(".")[0] == head}
    shape_keys = {k for k in expected if k in state and state[k].shape != expected[k].shape}
    if problems["missing"] or problems["unexpected"] or not shape_keys or not shape_keys <= head_keys:
        raise _misfit(path, model, problems)
    weight = f"{head}.weight"
    replaced = HeadReplacement(head, tuple(state[weight].shape), tuple(expected[weight].shape))
    backbone = {k: v for k, v in state.items() if k not in head_keys}
    model.load_state_dict({**backbone, **{k: expected[k] for k in head_keys}}, strict=True)
    return replaced
