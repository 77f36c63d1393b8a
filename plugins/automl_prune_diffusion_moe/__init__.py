"""Diffusion mixture of efficient experts (ECCV 2024 design, methods/diffusion_moe.md): a pretrained
diffusion UNet pruned into a few experts, one per interval of denoising timesteps, with a routing agent
that decides how much compute each interval gets.

The ``diffusion-moe`` strategy (``strategy.py``) joins the stages:

- ``similarity.py``: S(t, t') between timesteps (denoising-loss gradient cosine, or activation CKA);
- ``intervals.py``: contiguous intervals by dynamic programming, their number from the objective's knee;
- ``supernet.py``: an elastic expert, a weight-sharing supernet with nested widths and skippable blocks,
  trained by sandwich sampling with distillation from the dense UNet;
- ``experts.py``: an expert sliced from the supernet (checked against it), fine-tuned on its interval, and
  the mixture: a composite switching experts by timestep, with its average FLOPs per sampler step;
- ``agent.py``: the routing agent (per-expert categorical choices, Gumbel-softmax, the average-FLOPs-per-
  step resource loss weighted by the sampler's steps per interval);
- ``strategy.py``: prepare (similarity, intervals, supernets, cached) and a trial (agent, pick, extract,
  fine-tune, mixture); ``figures.py`` draws the heat map and the per-expert FLOPs/budget-share bars.
"""

from __future__ import annotations

from typing import Any

from automl_prune.api import hookimpl
from automl_prune_diffusion_moe.strategy import DiffusionMoEStrategy


@hookimpl
def register_strategies(register: Any) -> None:
    register(DiffusionMoEStrategy)
