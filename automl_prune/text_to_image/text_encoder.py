"""The frozen text encoder of the ``text-to-image`` task: captions -> token states for cross-attention.

Two kinds, named by the dataset's ``text_encoder`` argument and recorded in ``DataInfo.extra``, so a
saved model rebuilds the encoder it was trained with:

- ``random`` (the default): a word-level tokenizer (words split at whitespace only) over the
  dataset's caption vocabulary and a ``transformers`` ``CLIPTextModel`` (width 64, no transformer
  layers: token and position embeddings
  and the final LayerNorm) built from a config with a seeded random initialisation, frozen. The captions
  here are templated ("a bold right-leaning handwritten seven"): which words a caption holds is nearly
  all it says, and random token embeddings keep every word distinguishable, so the UNet's cross-attention
  learns what each word means while the encoder costs no training, no download and no file, and is
  rebuilt bit for bit from its seed. Random transformer layers only blur that: they mix the shared words
  into every token's state (the digit word's state in "... seven" and "... one" had cosine 0.95 after 2
  layers, 0.53 with none), and a base UNet trained 40 epochs on 2-layer states drew the captioned digit
  in 19-33% of its samples, against 77-88% with none. Training an encoder on these 84 captions would
  teach it little beyond word identity.
- a local directory (``text_encoder=PATH``): ``CLIPTextModel.from_pretrained(PATH)`` and
  ``AutoTokenizer.from_pretrained(PATH)``, e.g. Stable Diffusion's ``text_encoder``/``tokenizer``
  folders copied into one directory. Nothing is downloaded (``HF_HUB_OFFLINE``).

The encoder is never pruned and is not part of the model the search prunes: the task feeds its outputs
to the UNet as ``encoder_hidden_states``. Captions are padded to ``max_length`` tokens.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from automl_prune.errors import ModelError

# "words": tokens are the caption's whitespace-separated words ("left-leaning" is one word of the vocabulary)
RANDOM = {
    "kind": "random",
    "width": 64,
    "layers": 0,
    "heads": 4,
    "max_length": 16,
    "seed": 0,
    "words": "whitespace",
}
PAD, UNKNOWN = "[PAD]", "[UNK]"


@dataclass(frozen=True)
class TextEncoder:
    """A tokenizer and a frozen text model: :meth:`encode` gives token states, :meth:`pooled` their mean."""

    tokenizer: Any
    model: nn.Module
    max_length: int

    @property
    def width(self) -> int:
        return int(self.model.config.hidden_size)

    @torch.no_grad()
    def encode(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(token states (N, max_length, width), attention mask (N, max_length)) of ``captions``."""
        tokens = self.tokenizer(
            list(captions),
            padding="max_length",
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        states = self.model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        return states.last_hidden_state, tokens["attention_mask"]

    def pooled(self, captions: list[str]) -> torch.Tensor:
        """The mean of each caption's token states over its real (unpadded) tokens: (N, width)."""
        states, mask = self.encode(captions)
        weights = mask.unsqueeze(-1).to(states.dtype)
        return (states * weights).sum(1) / weights.sum(1).clamp_min(1.0)


def random_encoder(captions: list[str], spec: dict[str, Any] = RANDOM) -> TextEncoder:
    """The ``random`` kind (see the module doc) over the words of ``captions``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast

    words = sorted({word for caption in captions for word in caption.lower().split()})
    vocab = {word: i for i, word in enumerate([PAD, UNKNOWN, *words])}
    core = Tokenizer(models.WordLevel(vocab, unk_token=UNKNOWN))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()  # Whitespace() also splits at hyphens
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token=PAD, unk_token=UNKNOWN)
    config = CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=spec["width"],
        intermediate_size=2 * spec["width"],
        num_hidden_layers=spec["layers"],
        num_attention_heads=spec["heads"],
        max_position_embeddings=spec["max_length"],
        pad_token_id=0,
        bos_token_id=0,
        eos_token_id=0,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec["seed"])
        model = CLIPTextModel(config)
    return TextEncoder(tokenizer, model.eval().requires_grad_(False), spec["max_length"])


def local_encoder(path: str | Path, max_length: int = 77) -> TextEncoder:
    """A CLIP text model and tokenizer saved with ``save_pretrained`` in one local directory."""
    folder = Path(path).expanduser()
    fix = (
        "give a local directory holding a CLIPTextModel (config.json + weights) and its tokenizer, "
        "e.g. written by save_pretrained; nothing is downloaded"
    )
    if not (folder / "config.json").is_file():
        raise ModelError(f"no text encoder in {folder}: config.json not found", fix)
    from transformers import AutoTokenizer, CLIPTextModel

    try:
        model = CLIPTextModel.from_pretrained(folder)
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load the text encoder in {folder}: {exc}", fix) from exc
    length = min(max_length, int(model.config.max_position_embeddings))
    return TextEncoder(tokenizer, model.eval().requires_grad_(False), length)


def encoder_spec(text_encoder: str) -> dict[str, Any]:
    """What a dataset records for its ``text_encoder`` argument: ``random`` or a local directory."""
    if text_encoder == "random":
        return dict(RANDOM)
    return {"kind": "local", "path": str(Path(text_encoder).expanduser().resolve())}


def text_encoder(extra: dict[str, Any]) -> TextEncoder:
    """The encoder a dataset's ``DataInfo.extra`` names (``text_encoder`` spec, ``captions``), built
    once per process."""
    spec = extra.get("text_encoder", RANDOM)
    return _build(json.dumps(spec, sort_keys=True), tuple(extra.get("captions", ())))


@cache
def _build(spec_json: str, captions: tuple[str, ...]) -> TextEncoder:
    spec = json.loads(spec_json)
    if spec["kind"] == "random":
        return random_encoder(list(captions), spec)
    return local_encoder(spec["path"])
