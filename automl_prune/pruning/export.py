"""Export a (pruned) model to TorchScript and ONNX, written atomically.

ONNX uses torch's default exporter on torch 2.14 (``torch.export`` based, ``dynamo=True``); the
TorchScript-based one is deprecated there. Both run the model in eval mode and restore its mode.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from automl_prune.model_io import Inputs, TensorCall, evaluating, positional


def export_torchscript(model: nn.Module, example_input: Inputs, path: str | Path) -> Path:
    """Trace ``model`` on ``example_input`` and save it (load with ``torch.jit.load``). A model with
    several inputs or a structured output is traced behind :class:`~automl_prune.model_io.TensorCall`:
    positional tensors in, a tensor (or a tuple of tensors) out."""
    module = model if isinstance(example_input, torch.Tensor) else TensorCall(model, example_input)
    with evaluating(model), torch.no_grad():
        traced = torch.jit.trace(module, positional(example_input), strict=False)
    return _write_atomically(path, lambda tmp: torch.jit.save(traced, tmp))


def export_onnx(model: nn.Module, example_input: Inputs, path: str | Path) -> Path:
    """Export ``model`` to one self-contained ONNX file and check it with ``onnx.checker``."""
    import onnx

    module = model if isinstance(example_input, torch.Tensor) else TensorCall(model, example_input)

    def write(tmp: str) -> None:
        with evaluating(model):
            torch.onnx.export(
                module, positional(example_input), tmp, dynamo=True, external_data=False, verbose=False
            )
        onnx.checker.check_model(tmp, full_check=True)

    return _write_atomically(path, write)


def _write_atomically(path: str | Path, write: Callable[[str], None]) -> Path:
    """``write`` a temporary file next to ``path``, then rename it: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
