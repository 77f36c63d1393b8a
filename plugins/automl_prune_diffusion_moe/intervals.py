"""Stage 2: split the timestep grid into contiguous intervals of alike timesteps, one expert each.

The objective (:func:`interval_objective`) of a partition of the P grid points into intervals I_1..I_n:

    J = (1/P) * sum_k (1/|I_k|) * sum_{i, j in I_k} S[i, j]

the average over grid points of a point's mean similarity to the points of its interval, itself included.
Why this one, of the "mean within-interval similarity" one could mean:

- It counts every grid point once. The plain average over intervals of their mean pair similarity is won
  by degenerate splits: with the diagonal, by singletons (each scores 1); without it, by a few pairs of
  near-identical neighbours beside one huge leftover interval.
- S from :mod:`.similarity` is a Gram matrix of unit vectors g_i, and then
  J = 1 - (1/P) * sum_k sum_{i in I_k} ||g_i - mean_{I_k} g||^2: maximising J is k-means on the unit
  vectors with contiguous clusters. A singleton is chosen only for an outlier, the best J never falls as
  n grows, and splitting a block of equally alike points gains nothing.
- It is a sum over intervals, so the dynamic programme over where the last interval starts is exact
  (:func:`best_intervals`, O(n P^2)).

Intervals are ``(start, end)`` index ranges into the grid, end exclusive, in order, covering 0..P.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch

from automl_prune.api import AutomlPruneError

Bounds = list[tuple[int, int]]
DEFAULT_MAX_INTERVALS = 6


def interval_objective(S: torch.Tensor, bounds: Sequence[tuple[int, int]]) -> float:
    """J of the partition ``bounds`` of the grid of ``S`` (see the module's docstring)."""
    S = _checked_similarity(S)
    check_bounds(bounds, len(S))
    total = sum(float(S[a:b, a:b].sum()) / (b - a) for a, b in bounds)
    return total / len(S)


def best_intervals(S: torch.Tensor, n: int) -> Bounds:
    """The ``n`` contiguous intervals covering the grid of ``S`` that maximise :func:`interval_objective`,
    by dynamic programming (exact for that objective)."""
    S = _checked_similarity(S)
    points = len(S)
    _check_count(n, points)
    value = _interval_values(S)
    best = torch.full((points + 1,), float("-inf"), dtype=torch.float64)
    best[0] = 0.0
    starts = []  # starts[k][e]: where the (k+1)-th interval starts when it ends at e
    for _ in range(n):
        best, start = (best.unsqueeze(1) + value).max(0)
        starts.append(start)
    bounds, end = [], points
    for start in reversed(starts):
        begin = int(start[end])
        bounds.append((begin, end))
        end = begin
    return bounds[::-1]


def uniform_intervals(points: int, n: int) -> Bounds:
    """``n`` contiguous intervals of the grid as equal as integers allow (sizes differ by at most one)."""
    _check_count(n, points)
    edges = [k * points // n for k in range(n + 1)]
    return list(pairwise(edges))


def objective_curve(S: torch.Tensor, max_n: int = DEFAULT_MAX_INTERVALS) -> list[float]:
    """The best J for n = 1 .. ``max_n`` intervals (fewer when the grid has fewer points)."""
    S = _checked_similarity(S)
    return [interval_objective(S, best_intervals(S, n)) for n in range(1, min(max_n, len(S)) + 1)]


def knee_count(S: torch.Tensor, max_n: int = DEFAULT_MAX_INTERVALS) -> int:
    """The number of intervals where adding another stops paying: the knee of :func:`objective_curve`.

    With both axes scaled to [0, 1] (n from 1 to ``max_n``, J from its value at 1 to its value at
    ``max_n``), the knee is the n whose point lies farthest above the chord from the first point to the
    last. A flat curve (one interval is as good as any) gives 1; a curve with no point above its chord
    (each interval gains at least as much as the one before) gives ``max_n``.
    """
    curve = torch.tensor(objective_curve(S, max_n), dtype=torch.float64)
    rise = float(curve[-1] - curve[0])
    if len(curve) == 1 or rise <= 1e-9:
        return 1
    x = torch.linspace(0, 1, len(curve), dtype=torch.float64)
    above = (curve - curve[0]) / rise - x
    return int(above.argmax()) + 1 if float(above.max()) > 0 else len(curve)


def check_bounds(bounds: Sequence[tuple[int, int]], points: int) -> None:
    """Raise unless ``bounds`` are non-empty contiguous ranges covering 0..``points`` in order."""
    edges = [0]
    for a, b in bounds:
        if a != edges[-1] or b <= a:
            break
        edges.append(b)
    else:
        if edges[-1] == points:
            return
    raise AutomlPruneError(
        f"intervals {list(bounds)} do not cover the {points} grid points in order",
        "give (start, end) ranges with end > start, each starting where the last ended, from 0 to the "
        "grid's size (as best_intervals returns them)",
    )


def _interval_values(S: torch.Tensor) -> torch.Tensor:
    """value[a, b] = (1/(b-a)) * sum of S over [a, b) x [a, b), -inf unless a < b (2-D prefix sums)."""
    points = len(S)
    prefix = torch.zeros(points + 1, points + 1, dtype=torch.float64)
    prefix[1:, 1:] = S.cumsum(0).cumsum(1)
    a = torch.arange(points + 1).unsqueeze(1)
    b = torch.arange(points + 1).unsqueeze(0)
    block = prefix[b, b] - prefix[a, b] - prefix[b, a] + prefix[a, a]
    value = block / (b - a).clamp_min(1)
    return value.masked_fill(a >= b, float("-inf"))


def _checked_similarity(S: torch.Tensor) -> torch.Tensor:
    S = torch.as_tensor(S, dtype=torch.float64)
    if S.ndim != 2 or S.shape[0] != S.shape[1] or len(S) == 0:
        raise AutomlPruneError(
            f"a timestep similarity matrix is square, got shape {tuple(S.shape)}",
            "pass the P x P matrix that gradient_similarity or activation_cka returns",
        )
    return S


def _check_count(n: int, points: int) -> None:
    if not 1 <= n <= points:
        raise AutomlPruneError(
            f"the grid of {points} points splits into 1 to {points} intervals, not {n}",
            "ask for fewer intervals, or use a finer timestep grid",
        )
