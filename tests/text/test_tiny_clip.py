"""The tiny offline CLIP (helpers/text/tiny_clip.py)."""
from __future__ import annotations

import json

import torch
import torch.nn.functional as F
import transformers
from transformers import (
    AutoTokenizer,
    CLIPTextModelWithProjection,
)

from helpers.text.encoders import (
    TINY_MARKER,
    TextEncoder,
    make_tiny_clip,
)
from tests.text import DIM, REPORT


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return F.cosine_similarity(a, b, dim=0).item()


def test_tiny_clip_loads_through_from_pretrained(tiny_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    model = CLIPTextModelWithProjection.from_pretrained(tiny_dir)
    assert model.config.eos_token_id == tokenizer.eos_token_id != 2
    assert model.config.bos_token_id == tokenizer.bos_token_id
    assert model.config.vocab_size == len(tokenizer)
    assert tokenizer.model_max_length == 77
    assert (tiny_dir / "merges.txt").read_text().startswith("#version")
    ids = tokenizer(REPORT)["input_ids"]
    for cls in (transformers.CLIPTokenizer, transformers.CLIPTokenizerFast):
        assert cls.from_pretrained(tiny_dir)(REPORT)["input_ids"] == ids


def test_tiny_tokenizer_keeps_report_words_whole(tiny_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    tokens = tokenizer.tokenize("nodule in the right upper lobe, pleural effusion")
    assert tokens == ["nodule</w>", "in</w>", "the</w>", "right</w>", "upper</w>", "lobe</w>",
                      ",</w>", "pleural</w>", "effusion</w>"]
    # unseen characters fall back to byte symbols, never to the end token
    ids = tokenizer("naïve 🙂 xyzzy")["input_ids"]
    assert ids.count(tokenizer.eos_token_id) == 1


def test_make_tiny_clip_is_idempotent_per_arguments(tiny_dir):
    weights = next(tiny_dir.glob("*.safetensors"))
    stamp = weights.stat().st_mtime_ns
    assert make_tiny_clip(tiny_dir, hidden_size=DIM, num_heads=2, projection_dim=DIM) == tiny_dir
    assert weights.stat().st_mtime_ns == stamp
    other = tiny_dir.parent / "other"
    make_tiny_clip(other, hidden_size=16, num_heads=2, projection_dim=8, num_layers=1)
    assert TextEncoder(other).dim == 8
    make_tiny_clip(other, hidden_size=16, num_heads=2, projection_dim=4, vocab_size=600)
    assert json.loads((other / TINY_MARKER).read_text())["vocab_size"] == 600
    rebuilt = TextEncoder(other)
    assert rebuilt.dim == 4 and len(rebuilt.tokenizer) == rebuilt.model.config.vocab_size == 600


def test_tiny_embeddings_separate_sides_and_places(encoder):
    right, left, lower, same = encoder.encode([
        "nodule in the right upper lobe", "nodule in the left upper lobe",
        "nodule in the right lower lobe", "nodule in the right upper lobe"])
    assert torch.equal(right, same)
    assert cosine(right, left) < 0.99  # about 0.96 at this size, 0.95 at the default size
    assert cosine(right, lower) < 0.99
    assert (right - left).norm() > 0.1 * right.norm()
