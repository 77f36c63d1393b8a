"""Parameters and FLOPs as functions of the kernel sizes: soft (for the budget loss) and exact.

For a searchable layer l, both are ``c_l * k_l**2`` with ``c_l = C_in * C_out / groups`` (parameters)
or that times the output's H x W (fvcore FLOPs, batch 1, one multiply-add = one flop); everything else
(other layers, biases, norms) is a fixed part, measured once as the base model's count minus its
searchable layers' share. So ``exact(sizes)`` equals ``count_params``/``count_flops`` of the built CNN
(tests assert it), and ``soft(s)`` is the same polynomial in the soft sizes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from automl_prune.api import count_flops, count_params

KINDS = ("flops", "params")


@dataclass(frozen=True)
class KernelCost:
    """Per-layer coefficients and fixed parts of parameters and FLOPs."""

    layers: tuple[str, ...]
    params_coef: tuple[int, ...]
    flops_coef: tuple[int, ...]
    params_fixed: int
    flops_fixed: int

    @classmethod
    def measure(cls, model: nn.Module, layers: list[str], example: torch.Tensor) -> KernelCost:
        """Coefficients of the searchable ``layers`` of a plain ``model`` at input ``example`` (batch 1)."""
        convs = [model.get_submodule(name) for name in layers]
        spatial: dict[str, int] = {}
        hooks = [
            conv.register_forward_hook(
                lambda m, i, o, n=name: spatial.__setitem__(n, o.shape[-2] * o.shape[-1])
            )
            for name, conv in zip(layers, convs, strict=True)
        ]
        try:
            with torch.no_grad():
                model.eval()(example[:1])
        finally:
            for hook in hooks:
                hook.remove()
        params_coef = tuple(c.in_channels * c.out_channels // c.groups for c in convs)
        flops_coef = tuple(p * spatial[name] for p, name in zip(params_coef, layers, strict=True))
        sizes = [c.kernel_size[0] ** 2 for c in convs]
        return cls(
            layers=tuple(layers),
            params_coef=params_coef,
            flops_coef=flops_coef,
            params_fixed=count_params(model) - sum(c * s for c, s in zip(params_coef, sizes, strict=True)),
            flops_fixed=count_flops(model, example[:1])
            - sum(c * s for c, s in zip(flops_coef, sizes, strict=True)),
        )

    def _parts(self, kind: str) -> tuple[tuple[int, ...], int]:
        if kind == "params":
            return self.params_coef, self.params_fixed
        if kind == "flops":
            return self.flops_coef, self.flops_fixed
        raise ValueError(f"budget kind must be one of {KINDS}, got {kind!r}")

    def soft(self, sizes: torch.Tensor, kind: str) -> torch.Tensor:
        """The resource at soft sizes (differentiable)."""
        coef, fixed = self._parts(kind)
        return fixed + (torch.tensor(coef, dtype=sizes.dtype, device=sizes.device) * sizes**2).sum()

    def exact(self, sizes: dict[str, int], kind: str) -> int:
        """The resource of the CNN built at integer ``sizes``."""
        coef, fixed = self._parts(kind)
        return fixed + sum(c * sizes[name] ** 2 for c, name in zip(coef, self.layers, strict=True))

    def smallest(self, kind: str) -> int:
        """The resource with every searchable layer at 1x1: the least kernel sizes can reach."""
        return self.exact(dict.fromkeys(self.layers, 1), kind)

    def repair(self, soft: torch.Tensor, sizes: dict[str, int], target: float, kind: str) -> dict[str, int]:
        """Shrink sizes by one step (2) until ``exact <= target``: each time the layer whose soft size
        is closest to its next smaller odd size, i.e. the one the predictor was least sure about."""
        sizes = dict(sizes)
        position = {name: i for i, name in enumerate(self.layers)}
        while self.exact(sizes, kind) > target:
            shrinkable = [name for name in self.layers if sizes[name] > 1]
            if not shrinkable:
                break
            name = min(shrinkable, key=lambda n: float(soft[position[n]]) - (sizes[n] - 2))
            sizes[name] -= 2
        return sizes
