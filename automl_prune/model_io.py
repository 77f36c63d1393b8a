"""How the core calls a model it knows nothing about: inputs of any structure, outputs of any structure.

A task says what a model takes (:meth:`Task.example_input`): one tensor (a classifier), a tuple of
positional tensors (a diffusion UNet's ``(sample, timestep)``), or a dict of keyword tensors. A model
may return a tensor, a tuple, a dict or a dataclass-like output (diffusers' ``UNet2DOutput``). FLOP
counting, dependency tracing, latency, checks and export all go through the three helpers here, so
none of them assumes one image tensor in and one tensor out.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

Inputs = torch.Tensor | tuple[torch.Tensor, ...] | dict[str, torch.Tensor]


def to_device(inputs: Inputs, device: torch.device | str) -> Inputs:
    """``inputs`` with every tensor moved to ``device``, in the same structure."""
    if isinstance(inputs, torch.Tensor):
        return inputs.to(device)
    if isinstance(inputs, Mapping):
        return {k: v.to(device) for k, v in inputs.items()}
    return tuple(v.to(device) for v in inputs)


def call(model: nn.Module, inputs: Inputs) -> Any:
    """``model(inputs)``, ``model(*inputs)`` or ``model(**inputs)``, by the structure of ``inputs``."""
    if isinstance(inputs, torch.Tensor):
        return model(inputs)
    if isinstance(inputs, Mapping):
        return model(**inputs)
    return model(*inputs)


def output_tensors(output: Any) -> tuple[torch.Tensor, ...]:
    """The tensors of a model's output, in order: a dataclass-like or dict output by its fields."""
    if isinstance(output, torch.Tensor):
        return (output,)
    if hasattr(output, "to_tuple"):  # diffusers' BaseOutput
        output = output.to_tuple()
    if isinstance(output, Mapping):
        output = tuple(output.values())
    if isinstance(output, (tuple, list)):
        return tuple(t for o in output for t in output_tensors(o))
    return ()


def main_output(output: Any) -> torch.Tensor:
    """The first tensor of a model's output: what a masked and a sliced model are compared on."""
    tensors = output_tensors(output)
    if not tensors:
        raise TypeError(f"the model's output ({type(output).__name__}) holds no tensor")
    return tensors[0]


def positional(inputs: Inputs) -> tuple[torch.Tensor, ...]:
    """The input tensors as one flat tuple (what ``torch.jit.trace`` and fvcore take)."""
    if isinstance(inputs, torch.Tensor):
        return (inputs,)
    if isinstance(inputs, Mapping):
        return tuple(inputs.values())
    return tuple(inputs)


@contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode inside the block, back in the mode it came in after it."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


class TensorCall(nn.Module):
    """``model`` behind a forward of positional tensors that returns a tuple of tensors, so tracers
    (fvcore, TorchScript, ONNX) see a plain tensor function whatever the model's own signature.

    The wrapped model is the child ``model``, so per-module names gain the prefix ``model.``.
    """

    def __init__(self, model: nn.Module, inputs: Inputs) -> None:
        super().__init__()
        self.model = model
        self.keys = list(inputs) if isinstance(inputs, Mapping) else None

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...] | torch.Tensor:
        if self.keys is not None:
            out = self.model(**dict(zip(self.keys, tensors, strict=True)))
        else:
            out = self.model(*tensors)
        flat = output_tensors(out)
        return flat[0] if len(flat) == 1 else flat
