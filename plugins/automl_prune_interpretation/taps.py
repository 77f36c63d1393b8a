"""Taps: the classifier's own feature stages at several scales, which the selector decodes.

ISP's explainer reuses the classifier as its encoder, so it needs the outputs of the classifier's stages
(one per spatial scale) without knowing the architecture. :func:`find_taps` finds them from one forward
with hooks on every module; :class:`Taps` collects them during later forwards, gradients included, so a
gate hooked inside the model is trained through the explanation.
"""

from __future__ import annotations

from collections import Counter
from functools import partial
from itertools import pairwise
from types import TracebackType

import torch
from torch import nn

from automl_prune.api import eval_mode
from automl_prune_interpretation.rbf import Size


def _spatial(value: object) -> Size | None:
    return tuple(value.shape[-2:]) if isinstance(value, torch.Tensor) and value.dim() == 4 else None


def _area(size: Size) -> int:
    return size[0] * size[1]


def _inside(name: str, owner: str) -> bool:
    return name.startswith(f"{owner}.")


def find_taps(model: nn.Module, example_input: torch.Tensor, max_taps: int = 3) -> list[str]:
    """Names of the modules that output the feature stages, shallow -> deep, at most ``max_taps``.

    At each spatial size > 1 the stage output is the module whose hook fires last with that size (the
    outermost container, since a container's hook fires after its children's); the deepest ``max_taps``
    sizes are kept, in firing order, each smaller than the one before (a size that grows back, like VGG's
    adaptive pool to 7x7, is no stage). Two refinements keep the rule honest on torchvision models: a
    module called more than once (a shared ReLU) is skipped, because one tap must mean one tensor; and a
    module inside a block that takes size s in and gives the next smaller size out is skipped at size s,
    because it is that block's work towards the next stage (the expansion conv before a strided
    MobileNetV2 depthwise conv, the first 1x1 conv of a strided Bottleneck), not the end of this one.
    """
    calls: list[tuple[str, Size | None, Size | None]] = []

    def record(name: str, module: nn.Module, inputs: tuple[object, ...], output: object) -> None:
        calls.append((name, _spatial(inputs[0]) if inputs else None, _spatial(output)))

    handles = [m.register_forward_hook(partial(record, name)) for name, m in model.named_modules()]
    try:
        with eval_mode(model):
            model(example_input)
    finally:
        for handle in handles:
            handle.remove()

    sizes = sorted({_spatial(example_input), *(out for _, _, out in calls)} - {None}, key=_area, reverse=True)
    smaller = dict(pairwise(sizes))
    blocks = [(name, s_in) for name, s_in, s_out in calls if s_in in smaller and s_out == smaller[s_in]]
    counts = Counter(name for name, _, _ in calls)
    last: dict[Size, tuple[int, str]] = {}
    for index, (name, _, size) in enumerate(calls):
        if size is None or _area(size) <= 1 or counts[name] > 1:
            continue
        if not any(s == size and _inside(name, block) for block, s in blocks):
            last[size] = (index, name)
    stages: list[tuple[Size, str]] = []
    for index, name in sorted(last.values()):
        size = calls[index][2]
        if not stages or _area(size) < _area(stages[-1][0]):
            stages.append((size, name))
    return [name for _, name in stages[-max_taps:]]


class Taps:
    """``with Taps(model, names) as taps: model(x)``; then ``taps.outputs`` in ``names`` order.

    The hooks return nothing, so the outputs are the model's own tensors (after any gate hooked on the
    same module earlier) and gradients flow through them.
    """

    def __init__(self, model: nn.Module, names: list[str]) -> None:
        modules = dict(model.named_modules())
        if missing := [n for n in names if n not in modules]:
            raise ValueError(f"no modules {missing} in {type(model).__name__} to tap")
        self.names = list(names)
        self._outputs: dict[str, torch.Tensor] = {}
        self._handles = [modules[n].register_forward_hook(partial(self._keep, n)) for n in self.names]

    def _keep(self, name: str, module: nn.Module, inputs: tuple[object, ...], output: torch.Tensor) -> None:
        self._outputs[name] = output

    @property
    def outputs(self) -> list[torch.Tensor]:
        return [self._outputs[n] for n in self.names]

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> Taps:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.remove()
