"""Diffusion mixture of experts, stages 1 and 2: timestep similarity on a real tiny UNet, the interval
dynamic programme against a brute force and uniform intervals, the knee, the heat map."""

from __future__ import annotations

from itertools import combinations, pairwise
from pathlib import Path

import pytest
import torch
from automl_prune_diffusion_moe.figures import similarity_heatmap
from automl_prune_diffusion_moe.intervals import (
    best_intervals,
    interval_objective,
    knee_count,
    objective_curve,
    uniform_intervals,
)
from automl_prune_diffusion_moe.similarity import (
    activation_cka,
    gradient_similarity,
    linear_cka_matrix,
    resnet_output_weights,
    timestep_grid,
)
from torch.utils.data import DataLoader

from automl_prune.api import AutomlPruneError, ModelError, Progress
from automl_prune.data.registry import load_dataset
from automl_prune.diffusion.sampling import TRAIN_TIMESTEPS, noise_scheduler
from automl_prune.diffusion.task import DiffusionTask
from automl_prune.models.base import ModelRef
from automl_prune.models.registry import build_model

pytest.importorskip("diffusers")

QUIET = Progress(quiet=True)
GRID = 6


@pytest.fixture(scope="module")
def unet_batch() -> tuple[torch.nn.Module, torch.Tensor]:
    """The untrained ``ddpm-unet-tiny`` of the model registry and 8 digits at 16x16 in [-1, 1]."""
    data = load_dataset("digits", size=16)
    torch.manual_seed(0)
    model = build_model(ModelRef("ddpm-unet-tiny"), data.info)
    batch = next(iter(DataLoader(data.train, batch_size=8)))
    return model, DiffusionTask().images(batch, data, torch.device("cpu"))


@pytest.fixture(scope="module")
def gradient_s(unet_batch) -> torch.Tensor:
    model, images = unet_batch
    grid = timestep_grid(TRAIN_TIMESTEPS, GRID)
    return gradient_similarity(model, images, grid, scheduler=noise_scheduler(), progress=QUIET)


def check_similarity_matrix(S: torch.Tensor, points: int) -> None:
    assert S.shape == (points, points)
    assert torch.equal(S, S.T)
    assert torch.equal(S.diagonal(), torch.ones(points, dtype=S.dtype))
    assert S.min() >= -1 and S.max() <= 1
    assert S[~torch.eye(points, dtype=torch.bool)].max() < 1 - 1e-3, "distinct timesteps are not alike"


def random_symmetric(points: int, seed: int) -> torch.Tensor:
    """Off-diagonal entries uniform in [-1, 1], unit diagonal (not a Gram matrix)."""
    values = torch.rand(points, points, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    S = values * 2 - 1
    return ((S + S.T) / 2).fill_diagonal_(1.0)


def planted_blocks(sizes: tuple[int, ...], seed: int = 0, noise: float = 0.05) -> torch.Tensor:
    """0.8 inside the planted diagonal blocks, 0.1 between them, plus symmetric uniform noise."""
    points = sum(sizes)
    S = torch.full((points, points), 0.1, dtype=torch.float64)
    start = 0
    for size in sizes:
        S[start : start + size, start : start + size] = 0.8
        start += size
    jitter = torch.rand(points, points, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    jitter = (jitter * 2 - 1) * noise
    return (S + (jitter + jitter.T) / 2).fill_diagonal_(1.0)


def brute_force_best(S: torch.Tensor, n: int) -> float:
    """The best objective over every partition of the grid into ``n`` contiguous intervals."""
    points = len(S)
    return max(
        interval_objective(S, list(pairwise((0, *cuts, points))))
        for cuts in combinations(range(1, points), n - 1)
    )


def check_partition(bounds: list[tuple[int, int]], points: int, n: int) -> None:
    assert len(bounds) == n
    assert bounds[0][0] == 0 and bounds[-1][1] == points
    assert all(a < b for a, b in bounds)
    assert all(prev[1] == nxt[0] for prev, nxt in pairwise(bounds))


def test_timestep_grid_is_even_distinct_and_covers_the_range() -> None:
    assert timestep_grid(1000, 6) == [0, 200, 400, 599, 799, 999]
    grid = timestep_grid(TRAIN_TIMESTEPS)
    assert len(grid) == 50 and grid[0] == 0 and grid[-1] == TRAIN_TIMESTEPS - 1
    assert all(b > a for a, b in pairwise(grid))
    assert timestep_grid(10, 10) == list(range(10))
    for points in (1, 11):
        with pytest.raises(AutomlPruneError, match="2 to 10 points"):
            timestep_grid(10, points)


def test_gradient_similarity_on_the_tiny_unet(unet_batch, gradient_s) -> None:
    check_similarity_matrix(gradient_s, GRID)
    model, images = unet_batch
    # the default subset: one conv per resnet block, 3 down + 2 mid + 6 up in the tiny UNet
    assert len(resnet_output_weights(model)) == 11
    # the gradients leave no .grad behind, and the same noise serves every t: a repeated t is identical
    S = gradient_similarity(model, images, [300, 300, 700], scheduler=noise_scheduler(), progress=QUIET)
    assert all(p.grad is None for p in model.parameters())
    assert S[0, 1] == pytest.approx(1.0, abs=1e-6) and S[0, 2] < 0.999


def test_gradient_similarity_is_the_cosine_of_the_loss_gradients(unet_batch) -> None:
    model, images = unet_batch
    params = [model.mid_block.resnets[0].conv2.weight, model.up_blocks[0].resnets[1].conv2.weight]
    scheduler = noise_scheduler()
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(3))
    grads = []
    for t in (100, 800):
        steps = torch.full((len(images),), t)
        loss = torch.nn.functional.mse_loss(
            model(scheduler.add_noise(images, noise, steps), steps).sample, noise
        )
        grads.append(torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)]))
    expected = torch.nn.functional.cosine_similarity(*grads, dim=0)
    model.requires_grad_(False)  # a frozen model: gradients are still taken, the flags come back
    try:
        S = gradient_similarity(
            model, images, [100, 800], scheduler=scheduler, parameters=params, seed=3, progress=QUIET
        )
        assert not any(p.requires_grad for p in model.parameters())
    finally:
        model.requires_grad_(True)
    assert float(S[0, 1]) == pytest.approx(float(expected), abs=1e-5)


def test_activation_cka_on_the_tiny_unet(unet_batch) -> None:
    model, images = unet_batch
    grid = timestep_grid(TRAIN_TIMESTEPS, GRID)
    S = activation_cka(model, images, grid, scheduler=noise_scheduler(), progress=QUIET)
    check_similarity_matrix(S, GRID)
    assert S.min() >= 0  # CKA compares positive semi-definite Grams
    two = activation_cka(
        model, images, [300, 300, 700], scheduler=noise_scheduler(), layers=["mid_block", "up_blocks.1"]
    )
    assert two[0, 1] == pytest.approx(1.0, abs=1e-9) and two[0, 2] < 0.999
    with pytest.raises(ModelError, match="no module 'middle'"):
        activation_cka(model, images, grid, scheduler=noise_scheduler(), layers=["middle"])
    with pytest.raises(AutomlPruneError, match="at least 2 images"):
        activation_cka(model, images[:1], grid, scheduler=noise_scheduler())


def test_linear_cka_matches_its_feature_space_formula_and_invariances() -> None:
    g = torch.Generator().manual_seed(0)
    x, y = (
        torch.randn(10, 7, generator=g, dtype=torch.float64),
        torch.randn(10, 5, generator=g, dtype=torch.float64),
    )
    xc, yc = x - x.mean(0), y - y.mean(0)
    formula = (xc.T @ yc).norm() ** 2 / ((xc.T @ xc).norm() * (yc.T @ yc).norm())
    rotation, _ = torch.linalg.qr(torch.randn(7, 7, generator=g, dtype=torch.float64))
    S = linear_cka_matrix([x, y, 3 * x @ rotation + 2])
    assert float(S[0, 1]) == pytest.approx(float(formula), rel=1e-9)
    assert float(S[0, 2]) == pytest.approx(1.0, abs=1e-12)  # rotated, scaled and shifted: the same


@pytest.mark.parametrize("seed", range(4))
def test_the_dp_equals_a_brute_force_over_contiguous_partitions(seed: int) -> None:
    vectors = torch.randn(8, 5, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    unit = torch.nn.functional.normalize(vectors, dim=1)
    for S in (random_symmetric(8, seed), unit @ unit.T):
        for n in range(1, 5):
            bounds = best_intervals(S, n)
            check_partition(bounds, 8, n)
            assert interval_objective(S, bounds) == pytest.approx(brute_force_best(S, n), abs=1e-12)


def test_the_dp_beats_or_equals_uniform_intervals(gradient_s) -> None:
    for n in range(1, GRID + 1):
        bounds = best_intervals(gradient_s, n)
        check_partition(bounds, GRID, n)
        assert interval_objective(gradient_s, bounds) >= interval_objective(
            gradient_s, uniform_intervals(GRID, n)
        )
    strictly = 0
    for seed in range(5):
        S = random_symmetric(20, seed)
        for n in range(1, 7):
            dp, uniform = (interval_objective(S, b) for b in (best_intervals(S, n), uniform_intervals(20, n)))
            assert dp >= uniform - 1e-12
            strictly += dp > uniform + 1e-9
    assert strictly >= 20  # on random matrices the DP's intervals are better, not merely uniform


def test_the_objective_does_not_favour_tiny_intervals() -> None:
    """On similarity decaying evenly with distance the best intervals are the balanced ones (a per-
    interval mean would take singletons or pairs), and planted blocks are recovered exactly."""
    steps = torch.arange(30)
    decaying = 0.9 ** (steps[:, None] - steps[None, :]).abs().double()
    for n in (2, 3, 5):
        assert best_intervals(decaying, n) == uniform_intervals(30, n)
    assert best_intervals(planted_blocks((5, 12, 7)), 3) == [(0, 5), (5, 17), (17, 24)]
    curve = objective_curve(planted_blocks((5, 12, 7)))
    assert len(curve) == 6 and all(b >= a for a, b in pairwise(curve))


@pytest.mark.parametrize("sizes", [(10, 14), (5, 12, 7), (6, 9, 4, 8), (8, 8, 8, 8, 8)])
def test_knee_count_finds_the_planted_number_of_blocks(sizes: tuple[int, ...]) -> None:
    assert knee_count(planted_blocks(sizes, seed=len(sizes))) == len(sizes)


def test_knee_count_of_alike_timesteps_is_one() -> None:
    assert knee_count(torch.ones(12, 12)) == 1


def test_interval_arguments_are_checked() -> None:
    S = torch.eye(5)
    for bounds in ([(0, 2), (3, 5)], [(0, 3), (2, 5)], [(0, 4)], [(0, 0), (0, 5)], []):
        with pytest.raises(AutomlPruneError, match="do not cover the 5 grid points"):
            interval_objective(S, bounds)
    for n in (0, 6):
        with pytest.raises(AutomlPruneError, match="1 to 5 intervals"):
            best_intervals(S, n)
    with pytest.raises(AutomlPruneError, match="square"):
        best_intervals(torch.ones(3, 4), 1)
    assert uniform_intervals(10, 3) == [(0, 3), (3, 6), (6, 10)]


def test_similarity_heatmap_is_written(gradient_s, tmp_path: Path) -> None:
    grid = timestep_grid(TRAIN_TIMESTEPS, GRID)
    bounds = best_intervals(gradient_s, 2)
    path = similarity_heatmap(gradient_s, grid, bounds, tmp_path / "figs" / "similarity.png")
    assert path == tmp_path / "figs" / "similarity.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    with pytest.raises(AutomlPruneError, match="5 timesteps label a 6-point"):
        similarity_heatmap(gradient_s, grid[:5], bounds, tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()
