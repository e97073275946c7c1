"""Frozen text encoders (any Hugging Face model), the embedding cache, and side words.

A report's text becomes one float32 vector: CLIP's projected `text_embeds` (512-d for the default
`openai/clip-vit-base-patch32`), or the pooled output of a BERT-like model. Without the model hub
(CI, offline demo) the tiny CLIP of `helpers.tiny_clip` loads through the same `from_pretrained`
path.
"""
from __future__ import annotations

import re
import socket
import warnings
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer, CLIPTextModelWithProjection

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import TINY_TEXT_MODEL
from .layout import TEXT_MODELS_DIR
from .tiny_clip import TINY_MARKER, make_tiny_clip, quiet_transformers

CLIP_MODEL_TYPES = ("clip", "clip_text_model")


class TextModelError(RuntimeError):
    """The text model or its tokenizer could not be loaded."""


class TextEncoder:
    """A frozen Hugging Face text model that turns texts into float32 vectors.

    CLIP models (`model_type` "clip" or "clip_text_model") give the projected `text_embeds`; other
    (BERT-like) models give `pooler_output`, or the first token's hidden state when there is none.
    Texts longer than `max_length` tokens are truncated; `n_truncated` counts them.
    """

    def __init__(self, name_or_path: str | Path, device: str | torch.device = "cpu",
                 batch_size: int = 64):
        self.name = str(name_or_path)
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.tokenizer, self.model = _load_pretrained(self.name)
        # float32 on every device: embeddings are computed once and cached, speed is not an issue
        self.model.float().to(self.device).eval().requires_grad_(False)
        self.is_clip = isinstance(self.model, CLIPTextModelWithProjection)
        config = self.model.config
        self.dim = (self.model.text_projection.out_features if self.is_clip
                    else config.hidden_size)
        self.max_length = min(self.tokenizer.model_max_length,
                              getattr(config, "max_position_embeddings",
                                      self.tokenizer.model_max_length))
        self.n_truncated = 0
        self.is_tiny = (Path(self.name) / TINY_MARKER).is_file()

    def __repr__(self) -> str:
        return f"TextEncoder({self.name!r}, dim={self.dim}, max_length={self.max_length})"

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Untruncated token count of each text, special tokens included."""
        if not texts:
            return []
        ids = self.tokenizer(list(texts), truncation=False, verbose=False)["input_ids"]
        return [len(x) for x in ids]

    @torch.inference_mode()
    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Embed `texts` in batches.

        Returns:
            float32 tensor [N, dim] on the CPU.
        """
        texts = list(texts)
        if not texts:
            return torch.empty(0, self.dim)
        chunks = []
        for start in range(0, len(texts), self.batch_size):
            batch = texts[start:start + self.batch_size]
            self.n_truncated += sum(n > self.max_length for n in self.count_tokens(batch))
            inputs = self.tokenizer(batch, padding=True, truncation=True,
                                    max_length=self.max_length, return_tensors="pt")
            chunks.append(self._embed(inputs.to(self.device)).float().cpu())
        return torch.cat(chunks)

    def _embed(self, inputs) -> torch.Tensor:
        out = self.model(**inputs)
        if self.is_clip:
            return out.text_embeds
        pooled = getattr(out, "pooler_output", None)
        return pooled if pooled is not None else out.last_hidden_state[:, 0]



def _load_pretrained(name: str) -> tuple:
    """(tokenizer, model) of a hub name or a local `save_pretrained` folder."""
    try:
        with quiet_transformers():
            config = AutoConfig.from_pretrained(name)
            tokenizer = AutoTokenizer.from_pretrained(name)
            model_cls = (CLIPTextModelWithProjection if config.model_type in CLIP_MODEL_TYPES
                         else AutoModel)
            model = model_cls.from_pretrained(name)
    except (OSError, ValueError, RuntimeError) as err:  # RuntimeError: weights do not fit
        raise TextModelError(
            f"The text model {name!r} could not be loaded ({type(err).__name__}). Give the path "
            "of a local folder holding a `save_pretrained` copy of the model and its tokenizer, "
            f"or use the tiny offline model (text model {TINY_TEXT_MODEL!r}, built by "
            "`helpers.tiny_clip.make_tiny_clip`).") from err
    return tokenizer, model


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers a TCP connection (False at once when offline)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def load_text_encoder(name_or_path: str | Path, device: str | torch.device = "cpu", *,
                      cache_dir: str | Path | None = None, fallback: bool = False) -> TextEncoder:
    """A `TextEncoder`; `helpers.config.TINY_TEXT_MODEL` builds (once) and loads the tiny CLIP
    in `cache_dir` (default `data/text-models`).

    fallback=True (the demo): when the model cannot be loaded because the hub is out of reach,
    use the tiny offline CLIP instead and say so; the encoder's `is_tiny` tells the truth.
    """
    if str(name_or_path) != TINY_TEXT_MODEL:
        local = Path(name_or_path).exists()
        if not fallback or local or hub_reachable():
            try:
                return TextEncoder(name_or_path, device)
            except TextModelError:
                if not fallback or local:
                    raise
        print(f"Text model {str(name_or_path)!r} cannot be loaded (no model hub): using the tiny "
              "offline CLIP with random weights instead. Results show that the model can read a "
              "text, not how well the real encoder works.")
    return TextEncoder(make_tiny_clip(cache_dir or TEXT_MODELS_DIR), device)



class EmbeddingCache:
    """Each unique text is encoded once per (model, text); optionally persisted to a .pt file.

    The file holds `{"model": encoder name, "texts": [...], "emb": float32 [U, D]}`; one written
    for another model (or unreadable) is ignored and replaced on `save()`.
    """

    def __init__(self, encoder: TextEncoder, path: str | Path | None = None):
        self.encoder = encoder
        self.path = Path(path) if path is not None else None
        self.n_encoded = 0
        self._emb: dict[str, torch.Tensor] = {}
        if self.path is not None and self.path.is_file():
            self._load(self.path)

    def __len__(self) -> int:
        return len(self._emb)

    def _load(self, path: Path) -> None:
        try:
            data = load_checkpoint(path)
        except CheckpointError as err:
            warnings.warn(f"Ignoring the text embedding cache: {err}", stacklevel=3)
            return
        emb = data.get("emb")
        if (data.get("model") == self.encoder.name and isinstance(emb, torch.Tensor)
                and emb.ndim == 2 and emb.shape[1] == self.encoder.dim):
            self._emb = dict(zip(data["texts"], emb.float()))

    def get(self, texts: Sequence[str]) -> torch.Tensor:
        """Embeddings of `texts` (float32 [N, D], CPU); only texts not seen before are encoded."""
        new = [t for t in dict.fromkeys(texts) if t not in self._emb]
        if new:
            self._emb.update(zip(new, self.encoder.encode(new)))
            self.n_encoded += len(new)
        if not texts:
            return torch.empty(0, self.encoder.dim)
        return torch.stack([self._emb[t] for t in texts])

    def table(self, texts: Sequence[str]) -> tuple[torch.Tensor, list[int]]:
        """A table of the unique texts' embeddings (float32 [U, D]) and each text's row in it."""
        unique = list(dict.fromkeys(texts))
        row = {t: i for i, t in enumerate(unique)}
        return self.get(unique), [row[t] for t in texts]

    def save(self) -> None:
        """Write all embeddings seen so far to `path`."""
        if self.path is None:
            raise ValueError("This EmbeddingCache has no file: create it with a path to save it.")
        texts = list(self._emb)
        emb = (torch.stack([self._emb[t] for t in texts]) if texts
               else torch.empty(0, self.encoder.dim))
        save_checkpoint({"model": self.encoder.name, "texts": texts, "emb": emb}, self.path)


_SIDE = re.compile(r"\b(left|right)\b", re.IGNORECASE)
_BOTH = re.compile(r"\b(bilateral(ly)?|both)\b", re.IGNORECASE)


def _swap_word(match: re.Match) -> str:
    word = match.group(0)
    other = "right" if word.lower() == "left" else "left"
    if word.isupper():
        return other.upper()
    return other.capitalize() if word[0].isupper() else other


def swap_sides(text: str) -> str:
    """Exchange the words "left" and "right", keeping their case ("Left" -> "Right")."""
    return _SIDE.sub(_swap_word, text)


def names_side(text: str) -> str | None:
    """The side a text names: "left", "right", "both" (both words, or "bilateral"/"both"),
    or None."""
    sides = {m.lower() for m in _SIDE.findall(text)}
    if len(sides) == 2 or _BOTH.search(text):
        return "both"
    return sides.pop() if sides else None
