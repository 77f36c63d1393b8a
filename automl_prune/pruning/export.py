"""Export a (pruned) model to TorchScript and ONNX, written atomically.

ONNX uses torch's default exporter on torch 2.14 (``torch.export`` based, ``dynamo=True``); the
TorchScript-based one is deprecated there. The ONNX graph takes any batch size: dimension 0 of every
input (and so of every output) is the symbolic ``batch``. Both run the model in eval mode and restore its
mode. Files are created with the permissions an ordinary ``open`` gives under the umask.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from automl_prune.io import file_mode
from automl_prune.model_io import Inputs, TensorCall, evaluating, positional

BATCH = "batch"


def export_torchscript(model: nn.Module, example_input: Inputs, path: str | Path) -> Path:
    """Trace ``model`` on ``example_input`` and save it (load with ``torch.jit.load``). A model with
    several inputs or a structured output is traced behind :class:`~automl_prune.model_io.TensorCall`:
    positional tensors in, a tensor (or a tuple of tensors) out."""
    module = model if isinstance(example_input, torch.Tensor) else TensorCall(model, example_input)
    with evaluating(model), torch.no_grad():
        traced = torch.jit.trace(module, positional(example_input), strict=False)
    return _write_atomically(path, lambda tmp: torch.jit.save(traced, tmp))


def export_onnx(model: nn.Module, example_input: Inputs, path: str | Path) -> Path:
    """Export ``model`` to one self-contained ONNX file and check it with ``onnx.checker``. Dimension 0 of
    each input and output is the dynamic ``batch`` axis, so the file runs at any batch size, though the
    example may hold one sample."""
    import onnx

    module = model if isinstance(example_input, torch.Tensor) else TensorCall(model, example_input)
    args = tuple(_two_samples(a) for a in positional(example_input))
    batch = torch.export.Dim(BATCH)
    per_input = tuple({0: batch} if a.dim() > 0 else None for a in args)
    # TensorCall.forward(*tensors) takes its inputs as one variadic argument: one spec for it, a tuple.
    dynamic_shapes = per_input if module is model else (per_input,)

    if module is not model:
        module.training = False  # the wrapper's own flag; ``evaluating`` switches the model inside it

    def write(tmp: str) -> None:
        with evaluating(model), warnings.catch_warnings():
            # several inputs share the one ``batch`` dimension; torch notes that it names it once
            warnings.filterwarnings("ignore", message=".*axis name: batch will not be used")
            torch.onnx.export(
                module,
                args,
                tmp,
                dynamo=True,
                dynamic_shapes=dynamic_shapes,
                external_data=False,
                verbose=False,
            )
        onnx.checker.check_model(tmp, full_check=True)

    return _write_atomically(path, write)


def _two_samples(tensor: torch.Tensor) -> torch.Tensor:
    """A one-sample example as two: ``torch.export`` specialises a dimension of size 1 to the constant 1
    (a ViT's class token expanded to the batch, a ConvNeXt) and then fails or drops the dynamic axis."""
    return (
        tensor.expand(2, *tensor.shape[1:]).contiguous() if tensor.dim() > 0 and len(tensor) == 1 else tensor
    )


def _write_atomically(path: str | Path, write: Callable[[str], None]) -> Path:
    """``write`` a temporary file next to ``path``, then rename it: readers never see half a file. The
    file gets the mode ``open`` would give it (``mkstemp`` makes it 0o600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
