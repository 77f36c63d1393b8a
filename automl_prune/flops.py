"""FLOP counting and budgets.

Convention (stated in every report): FLOPs are fvcore's count at the stated input shape and batch 1.
fvcore counts one multiply-add as one flop, so the numbers are MACs. Element-wise ops fvcore ignores by
default (additions, activations) are not counted.
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from automl_prune.errors import BudgetError, ModelError
from automl_prune.model_io import Inputs, TensorCall, call, evaluating, positional

FLOPS_CONVENTION = "fvcore count at batch 1 (one multiply-add = one flop, i.e. MACs)"


def count_flops(model: nn.Module, inputs: Inputs) -> int:
    """fvcore's FLOP count of one call of ``model`` on ``inputs`` (a tensor, tuple or dict; use batch 1)."""
    fix = (
        "the model's forward must be traceable by torch.jit.trace: tensor inputs, tensor outputs (or a "
        "tuple, dict or dataclass of tensors), no data-dependent Python control flow; wrap or simplify it"
    )
    with torch.no_grad(), evaluating(model):
        try:
            output = call(model, inputs)
        except Exception as exc:
            raise ModelError(
                f"cannot run {type(model).__name__} on its example inputs: {type(exc).__name__}: {exc}", fix
            ) from exc
        if not _all_tensors(output):
            raise ModelError(
                f"cannot trace {type(model).__name__}: its forward returns {_describe(output)}", fix
            )
        try:
            total = module_flops(model, inputs)[""]
        except Exception as exc:
            raise ModelError(
                f"cannot trace {type(model).__name__} to count its FLOPs: {type(exc).__name__}: {exc}", fix
            ) from exc
    if total == 0 and count_params(model) > 0:
        raise ModelError(f"cannot trace {type(model).__name__}: fvcore counted no FLOPs in its forward", fix)
    return total


def module_flops(model: nn.Module, inputs: Inputs) -> dict[str, int]:
    """fvcore's counts per module name of ``model`` (``""``: the whole call), with attention counted.

    fvcore has no handler for ``scaled_dot_product_attention``; it is counted here as its two matmuls,
    ``B * heads * Lq * Lk * (d_qk + d_v)`` multiply-adds (softmax and scaling are element-wise and, like
    fvcore's other element-wise ops, not counted).
    """
    from fvcore.nn import FlopCountAnalysis

    with evaluating(model), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fvcore's use of torch.jit.script is deprecated, not broken
        analysis = FlopCountAnalysis(TensorCall(model, inputs), positional(inputs))
        analysis.set_op_handle("aten::scaled_dot_product_attention", _attention_flops)
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        logging.getLogger("fvcore").setLevel(logging.ERROR)
        counts = analysis.by_module()
    prefix = "model"
    return {name[len(prefix) + 1 :] if name != prefix else "": int(n) for name, n in counts.items() if name}


def _attention_flops(inputs: list[Any], outputs: list[Any]) -> int:
    from fvcore.nn.jit_handles import get_shape

    q, k, v = (get_shape(i) for i in inputs[:3])
    batch = math.prod(q[:-2])
    return batch * q[-2] * k[-2] * (q[-1] + v[-1])


def _all_tensors(output: object) -> bool:
    if hasattr(output, "to_tuple"):  # diffusers' BaseOutput
        output = output.to_tuple()
    if isinstance(output, torch.Tensor):
        return True
    if isinstance(output, (tuple, list)):
        return bool(output) and all(_all_tensors(o) for o in output)
    if isinstance(output, dict):
        return bool(output) and all(_all_tensors(o) for o in output.values())
    return False


def _describe(output: object) -> str:
    if isinstance(output, dict):
        return "a dict with " + ", ".join(f"{k!r}: {type(v).__name__}" for k, v in output.items())
    return f"a {type(output).__name__}"


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not) of ``model``; a task counts only what its inference runs
    (``Task.n_params``: a GAN's generator)."""
    return sum(p.numel() for p in model.parameters())


_ABSOLUTE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e-?[0-9]+)?)\s*([kKmMgG])(?:flops|FLOPs|FLOPS)?\s*$")
_SCALE = {"k": 1e3, "m": 1e6, "g": 1e9}


@dataclass(frozen=True)
class Budget:
    """A FLOPs budget: a ratio of the base model (``0.5``) or absolute (``12M``, ``0.8G``)."""

    ratio: float | None = None
    absolute: float | None = None

    @classmethod
    def parse(cls, text: str | float | None) -> Budget | None:
        """``0.5`` or ``50%`` is a ratio of the base model; ``20M`` / ``1.5G`` are absolute FLOPs."""
        if text is None:
            return None
        if isinstance(text, (int, float)):
            return cls._ratio(float(text), str(text))
        s = str(text).strip()
        m = _ABSOLUTE.match(s)
        if m:
            value = float(m.group(1)) * _SCALE[m.group(2).lower()]
            if value <= 0:
                raise BudgetError(f"FLOPs budget {s!r} must be positive", "give e.g. 0.5 (ratio) or 20M")
            return cls(absolute=value)
        try:
            value = float(s[:-1]) / 100 if s.endswith("%") else float(s)
        except ValueError:
            raise BudgetError(
                f"cannot read the FLOPs budget {s!r}",
                "give a ratio of the base model (0.5 or 50%) or absolute FLOPs with a unit (20M, 1.2G)",
            ) from None
        return cls._ratio(value, s)

    @classmethod
    def _ratio(cls, value: float, text: str) -> Budget:
        if not 0 < value <= 1:
            raise BudgetError(
                f"FLOPs budget ratio {text!r} is outside (0, 1]",
                "a ratio is a fraction of the base model's FLOPs; for absolute FLOPs add a unit (20M)",
            )
        return cls(ratio=value)

    def resolve(self, base_flops: float) -> float:
        """The budget in absolute FLOPs for a base model of ``base_flops``."""
        return self.ratio * base_flops if self.ratio is not None else float(self.absolute)

    def __str__(self) -> str:
        return f"{self.ratio:g} x base" if self.ratio is not None else f"{self.absolute / 1e6:g}M FLOPs"


def constraint_value(flops: float, max_flops: float | None) -> float:
    """Optuna constraint: <= 0 is feasible. Relative excess over the budget, so it is scale-free."""
    return 0.0 if max_flops is None else flops / max_flops - 1.0
