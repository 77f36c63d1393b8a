"""Figures of the prompt experts: written as PNGs, the table's overflow and held-out marks, bad input."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from automl_prune_prompt import figures
from automl_prune_prompt.figures import (
    FigureInputError,
    expert_samples,
    expert_sizes,
    prompts_by_expert,
    rank_correlation,
)
from PIL import Image

from automl_prune import figures as shared_figures
from automl_prune.api import AutomlPruneError

CAPTIONS = [f"a photo of object {i:02d} on a table" for i in range(84)]
PARTS = [0] * 30 + [1] * 20 + [2] * 10 + [3] * 24  # expert 0 and 3 overflow the 14 shown


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The texts of every figure written while the test runs."""
    texts: list[str] = []
    real = figures.png_bytes

    def capture(fig: Any, dpi: float | None = None) -> bytes:
        texts.extend(t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text")))
        return real(fig, dpi=dpi)

    monkeypatch.setattr(figures, "png_bytes", capture)
    monkeypatch.setattr(shared_figures, "png_bytes", capture)  # the sample grid draws there
    return texts


def opened(path: Path) -> tuple[int, int]:
    assert path.stat().st_size > 0
    with Image.open(path) as image:
        image.verify()
        return image.size


def test_prompts_by_expert_lists_captions_with_overflow_and_held_out_marks(
    tmp_path: Path, drawn: list[str]
) -> None:
    path = prompts_by_expert(
        CAPTIONS, PARTS, [0.55, 0.3, 0.8, 0.42], tmp_path / "figs" / "prompts.png", held_out={31, 55, 83}
    )
    width, height = opened(path)
    assert width >= 4 * 250 and 300 <= height <= 1200
    assert "expert 0: 0.55 of the FLOPs,\n30 prompts" in drawn
    assert "expert 2: 0.80 of the FLOPs,\n10 prompts" in drawn
    assert sorted(t for t in drawn if t.startswith("... and")) == [
        "... and 10 more",  # expert 3: 24 prompts
        "... and 16 more",  # expert 0: 30
        "... and 6 more",  # expert 1: 20; expert 2 (10) lists all
    ]
    assert "a photo of object 31 on a table *" in drawn  # held out, in expert 1
    assert "a photo of object 30 on a table" in drawn  # seen in training: no mark
    assert "a photo of object 29 on a table" not in drawn  # expert 0's 15th caption, past the 14 shown
    assert any(t.startswith("* held out") for t in drawn)


def test_prompts_by_expert_sorts_and_cuts_long_captions(tmp_path: Path, drawn: list[str]) -> None:
    captions = ["zebra", "Apple", "mango " * 20, "kiwi " * 20]
    prompts_by_expert(captions, [1, 1, 1, 1], [0.9, 0.5], tmp_path / "t.png", held_out={3})
    lines = [t for t in drawn if t in ("Apple", "zebra") or t.startswith(("mango", "kiwi"))]
    assert lines[0] == "Apple" and lines[-1] == "zebra"
    assert all(len(line) <= figures.CAPTION_CHARS for line in lines)
    assert lines[1].endswith("… *") and lines[2].endswith("m…")  # not held out: no mark
    drawn.clear()
    prompts_by_expert(captions, [1, 1, 1, 1], [0.9, 0.5], tmp_path / "t.png")
    assert not any(t.startswith("* held out") or t.endswith("*") for t in drawn)
    assert not any("expert 0" in t for t in drawn)  # only experts that serve a prompt get a column


@pytest.mark.parametrize(
    ("parts", "ratios", "held_out", "message"),
    [
        ([0, 1], [0.5, 0.5], (), "parts has 2 entries for 3 captions"),
        ([0, 1, 2], [0.5, 0.5], (), "ratios has 2 entries"),
        ([0, -1, 1], [0.5, 0.5], (), "ratios has 2 entries"),
        ([0, 1, 1], [0.5, 0.5], (3,), "outside 0..2"),
    ],
)
def test_prompts_by_expert_rejects_inputs_that_disagree(
    tmp_path: Path, parts: list[int], ratios: list[float], held_out: tuple[int, ...], message: str
) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        prompts_by_expert(["a", "b", "c"], parts, ratios, tmp_path / "bad.png", held_out=held_out)
    assert isinstance(caught.value, AutomlPruneError) and caught.value.fix
    assert not (tmp_path / "bad.png").exists()


def test_expert_sizes_marks_target_achieved_mean_and_counts(tmp_path: Path, drawn: list[str]) -> None:
    path = expert_sizes([0.3, 0.5, 0.9], [10, 20, 10], [0.01, 0.02, 0.04], 0.5, tmp_path / "sizes.png")
    width, height = opened(path)
    assert width >= 700 and height >= 300
    assert {"n=10", "n=20"} <= set(drawn)
    assert "target mean 0.50" in drawn
    assert "achieved mean 0.55 (per prompt)" in drawn  # (3 + 10 + 9) / 40
    assert any(t.startswith("Do harder prompt groups get larger experts?") and "+1.00" in t for t in drawn)


def test_expert_sizes_draws_an_expert_without_prompts(tmp_path: Path, drawn: list[str]) -> None:
    path = expert_sizes([0.3, 0.6], [12, 0], [0.02, float("nan")], 0.4, tmp_path / "sizes.png")
    assert opened(path)[0] > 0
    assert "no prompts" in drawn and "achieved mean 0.30 (per prompt)" in drawn


@pytest.mark.parametrize(
    ("counts", "difficulty", "message"),
    [
        ([1, 2], [0.1, 0.2, 0.3], "counts has 2 entries for 3 experts"),
        ([1, 2, 3], [0.1], "difficulty has 1 entries for 3 experts"),
        ([0, 0, 0], [0.1, 0.2, 0.3], "negative or all zero"),
    ],
)
def test_expert_sizes_rejects_bad_input(
    tmp_path: Path, counts: list[int], difficulty: list[float], message: str
) -> None:
    with pytest.raises(FigureInputError, match=message):
        expert_sizes([0.2, 0.4, 0.6], counts, difficulty, 0.4, tmp_path / "bad.png")


def test_rank_correlation() -> None:
    assert rank_correlation([1, 2, 3], [10, 30, 20]) == pytest.approx(0.5)
    assert rank_correlation([3, 2, 1], [0.1, 0.2, 0.9]) == pytest.approx(-1.0)
    assert rank_correlation([1, float("nan"), 2], [1, 5, 2]) == pytest.approx(1.0)  # NaN pairs dropped
    assert math.isnan(rank_correlation([1, 1], [1, 2]))


def test_expert_samples_one_row_per_expert(tmp_path: Path, drawn: list[str]) -> None:
    rows = [(f"expert {k} ({r:.2f})", torch.rand(4, 3, 16, 16) * 2 - 1) for k, r in enumerate([0.48, 0.7])]
    width, height = opened(expert_samples(rows, tmp_path / "samples.png", title="guided samples"))
    assert width > height > 100
    assert {"expert 0 (0.48)", "expert 1 (0.70)", "guided samples"} <= set(drawn)


@pytest.mark.parametrize("images", [torch.zeros(0, 3, 8, 8), torch.zeros(3, 8, 8), torch.zeros(2, 5, 8, 8)])
def test_expert_samples_rejects_non_image_batches(tmp_path: Path, images: torch.Tensor) -> None:
    with pytest.raises(FigureInputError, match="expert 0"):
        expert_samples([("expert 0", images)], tmp_path / "s.png", title="t")
    with pytest.raises(FigureInputError, match="no expert rows"):
        expert_samples([], tmp_path / "s.png", title="t")
