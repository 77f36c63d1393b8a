"""Diffusion models in the core: the ``diffusion`` task, DDPM UNets from diffusers configs, sampling,
and the layer rules that let the pruning toolbox slice diffusers' attention and resamplers."""
