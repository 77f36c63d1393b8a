"""Prompt-based pruning of text-to-image diffusion (APTP, ICLR 2025; methods/prompt.md): each prompt is
routed to one of K learned architecture codes, so it gets a sub-network sized for it, and prompts that
share a code are batched through one pruned UNet.

- ``gated_unet.py``: where an architecture vector's entries act on a conditional UNet (width gates per
  channel-group unit, ordered depth gates), for a batch of per-prompt rows, its FLOPs, and the sliced
  expert;
- ``router.py``: the trainable router: the architecture predictor (prompt embedding to gate logits),
  the K codes, and the contrastive and anti-collapse losses (the relaxation, routing embedding and
  balanced assignment are the toolbox's ``automl_prune.pruning.routing``);
- ``distill.py``: min-SNR denoising plus output and stage distillation from the dense UNet;
- ``training.py``: the router's training loop with the UNet frozen (warm-up, then routed codes);
- ``experts.py``: experts sliced from the loaded dense UNet, checked, fine-tuned on their prompts;
- ``strategy.py``: a trial: router, routing, experts, the composite behind the core's ``PromptRouter``;
- ``report.py`` and ``figures.py``: prompts by expert, expert sizes against the prompts' difficulty, and
  samples per expert.
"""

from __future__ import annotations

from typing import Any

from automl_prune.api import hookimpl
from automl_prune_prompt.strategy import PromptStrategy


@hookimpl
def register_strategies(register: Any) -> None:
    register(PromptStrategy)
