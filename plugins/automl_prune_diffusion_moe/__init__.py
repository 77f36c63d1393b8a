"""Diffusion mixture of efficient experts (ECCV 2024 design, methods/diffusion_moe.md): a pretrained
diffusion UNet pruned into a few experts, one per interval of denoising timesteps, with a routing agent
that decides how much compute each interval gets.

Being built (issue 14); the strategy is registered once its stages exist end to end:

- ``similarity.py``: S(t, t') between timesteps (denoising-loss gradient cosine, or activation CKA);
- ``intervals.py``: contiguous intervals by dynamic programming, their number from the objective's knee;
- ``supernet.py``: an elastic expert, a weight-sharing supernet with nested widths and skippable blocks,
  trained by sandwich sampling with distillation from the dense UNet;
- ``experts.py``: an expert sliced from the supernet (checked against it), fine-tuned on its interval, and
  the mixture: a composite switching experts by timestep, with its average FLOPs per sampler step;
- ``agent.py``: the routing agent (per-expert categorical choices, Gumbel-softmax, the average-FLOPs-per-
  step resource loss weighted by the sampler's steps per interval).
"""
