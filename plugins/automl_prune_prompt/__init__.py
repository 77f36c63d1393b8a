"""Prompt-based pruning of text-to-image diffusion (APTP, ICLR 2025; methods/prompt.md): each prompt is
routed to one of K learned architecture codes, so it gets a sub-network sized for it, and prompts that
share a code are batched through one pruned UNet.

- ``gated_unet.py``: where an architecture vector's entries act on a conditional UNet (width gates per
  channel-group unit, ordered depth gates), for a batch of per-prompt rows, and the sliced expert;
- ``router.py``: the router's tensor math: the architecture predictor (prompt embedding to gate logits),
  the K codes, the Gumbel relaxation (ordered on depth), the routing embedding and similarity, balanced
  assignment by optimal transport, and the contrastive and anti-collapse losses.
"""
