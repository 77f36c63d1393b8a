"""RBF saliency masks: three numbers per image (centre y, centre x, width) -> a Gaussian blob.

A mask this simple is what makes ISP's explanations comparable between the original and a pruned
model: the gate search matches three numbers per image, not a whole map. Everything is vectorised over
the batch and the pixels.

Parameterisation of the raw parameters ``raw = (p_y, p_x, p_s)`` (all in pixels):

- centre ``c = A * tanh(p / A) + B`` with ``A = B = (side - 1) / 2`` per axis: ``p = 0`` is the image
  centre, the slope there is 1 pixel per unit, and no raw value can move the centre off the image;
- width ``w = softplus(p_s + s0) + eps`` with ``eps = 0.5`` px (a mask never shrinks below about a pixel)
  and the shift ``s0 = softplus^-1(min(H, W) / 4 - eps)``, so ``p_s = 0`` is a width of a quarter of the
  image whatever its resolution; away from tiny widths ``p_s`` is close to a pixel offset of the width.
  A zero head therefore starts from a centred mask of width H/4, and the three raw numbers share one
  unit, which keeps an MSE on them (the gate search's) balanced between position and size.
"""

from __future__ import annotations

import math

import torch

from automl_prune.pruning import gumbel_sigmoid

EPS = 0.5  # px: the narrowest width
PROB_EPS = 1e-4  # relaxed Bernoulli probabilities are kept in [PROB_EPS, 1 - PROB_EPS] (finite logits)

Size = tuple[int, int]


def _width_shift(size: Size) -> float:
    """``s0``: the raw width offset at which the width is ``min(size) / 4``."""
    return math.log(math.expm1(min(size) / 4 - EPS))


def activate(raw: torch.Tensor, size: Size) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw ``[N, 3]`` ``(p_y, p_x, p_s)`` -> centre ``[N, 2]`` ``(y, x)`` and width ``[N]``, in pixels."""
    half = raw.new_tensor([(size[0] - 1) / 2, (size[1] - 1) / 2])
    centre = half * torch.tanh(raw[:, :2] / half) + half
    width = torch.nn.functional.softplus(raw[:, 2] + _width_shift(size)) + EPS
    return centre, width


def rbf_mask(centre: torch.Tensor, width: torch.Tensor, size: Size) -> torch.Tensor:
    """``m(i, j) = exp(-((i - c_y)^2 + (j - c_x)^2) / (2 w^2))`` as ``[N, 1, H, W]``, 1 at the centre."""
    ys = torch.arange(size[0], dtype=centre.dtype, device=centre.device).view(1, -1, 1)
    xs = torch.arange(size[1], dtype=centre.dtype, device=centre.device).view(1, 1, -1)
    d2 = (ys - centre[:, 0, None, None]) ** 2 + (xs - centre[:, 1, None, None]) ** 2
    return torch.exp(-d2 / (2 * width[:, None, None] ** 2)).unsqueeze(1)


def random_rbf(
    n: int, size: Size, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random masks (on the generator's device): centre uniform over the image, width uniform in
    [side/6, side/3] with side = min(H, W): the masks the predictor learns to see through."""
    u = torch.rand(n, 3, generator=generator, device=generator.device if generator is not None else None)
    centre = u[:, :2] * u.new_tensor([size[0] - 1, size[1] - 1])
    side = min(size)
    return centre, side / 6 + u[:, 2] * side / 6


def relaxed_bernoulli(
    probs: torch.Tensor, temperature: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """A differentiable relaxed Bernoulli sample of ``probs`` (binary-concrete, Maddison et al. 2017).

    It is the toolbox's soft Gumbel-sigmoid of the logits with no offset: sigmoid((logit p + L) / T)
    with logistic noise L, i.e. ``RelaxedBernoulli(T, probs).rsample()`` with a seedable generator.
    """
    logits = torch.logit(probs.clamp(PROB_EPS, 1 - PROB_EPS))
    return gumbel_sigmoid(logits, temperature, offset=0.0, hard=False, generator=generator)
