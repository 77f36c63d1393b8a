"""Sampling a saved text-to-image model from free-text prompts: what a user of a search's champion calls.

    from automl_prune.text_to_image import generate
    images = generate("runs/t2i/trials/0000/model", ["a bold upright handwritten seven"])  # (1, C, H, W)
"""

from __future__ import annotations

from pathlib import Path

import torch

from automl_prune.pruning.persistence import data_info, load_pruned, read_spec
from automl_prune.text_to_image.task import TextToImageTask


def generate(
    path: str | Path,
    prompts: list[str],
    *,
    seed: int = 0,
    device: str | torch.device = "cpu",
    trust_code: bool = False,
) -> torch.Tensor:
    """Guided samples (the task's defaults: DDIM 50 steps, guidance 1.5) of the model saved at ``path``
    (a pruned UNet or a prompt-routed composite), one per prompt, with the text encoder it was trained
    with (recorded with its data facts)."""
    info = data_info(read_spec(path))
    model = load_pruned(path, trust_code=trust_code).to(device)
    task = TextToImageTask()
    return task.generate_text(model, list(prompts), info, seed=seed, device=torch.device(device))
