"""Frozen text encoders (any Hugging Face model) and the embedding cache.

A report's text becomes one float32 vector: CLIP's projected `text_embeds` (512-d for the default
`openai/clip-vit-base-patch32`), or the pooled output of a BERT-like model. Without the model hub
(CI, offline demo) the tiny CLIP of `helpers.tiny_clip` loads through the same `from_pretrained`
path.
"""
from __future__ import annotations

import socket
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urlparse

import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer, CLIPTextModelWithProjection

from ..core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ..core.settings import TINY_TEXT_MODEL
from ..core.layout import TEXT_MODELS_DIR
from .places import text_input, text_input_dim
from .st_modules import SentenceModules, TextModelError, read_modules
from .tiny_clip import TINY_MARKER, make_tiny_clip, quiet_transformers

CLIP_MODEL_TYPES = ("clip", "clip_text_model")


class TextEncoder:
    """A frozen Hugging Face text model that turns texts into float32 vectors.

    Pooling per model family: CLIP models (`model_type` "clip" or "clip_text_model") give the
    projected `text_embeds`; BERT-like models are mean-pooled over the attention mask, the standard
    sentence embedding (their `pooler_output` head is a next-sentence classifier, not one), unless a
    sentence-transformers model says otherwise (a local folder or a hub name such as
    `sentence-transformers/all-MiniLM-L6-v2`, read by `st_modules.read_modules`: the model's files
    in the Transformer module's sub-folder, the Pooling module's mode, `Dense` layers and
    `Normalize` after pooling, `max_seq_length`; a module it cannot apply is refused).
    `encode_tokens` gives the token-level states (`last_hidden_state`) for fusions that attend.
    Texts longer than `max_length` tokens are truncated at the end; `n_truncated` counts them.
    `revision`: a hub name's branch, tag or commit (None: its default branch); `commit` is the
    commit the weights came from (None for a local folder).
    """

    def __init__(self, name_or_path: str | Path, device: str | torch.device = "cpu",
                 batch_size: int = 64, revision: str | None = None):
        self.name = str(name_or_path)
        self.device = torch.device(device)
        self.batch_size = batch_size
        st = read_modules(self.name)
        self.tokenizer, self.model = _load_pretrained(self.name, revision, st.subfolder)
        self.commit = getattr(self.model.config, "_commit_hash", None) or None
        # float32 on every device: embeddings are computed once and cached, speed is not an issue
        self.model.float().to(self.device).eval().requires_grad_(False)
        self.is_clip = isinstance(self.model, CLIPTextModelWithProjection)
        st = SentenceModules() if self.is_clip else st
        config = self.model.config
        self.post = torch.nn.Sequential(*st.post).float().to(self.device).eval().requires_grad_(False)
        self.dim = (self.model.text_projection.out_features if self.is_clip
                    else st.out_features(config.hidden_size))
        self.token_dim = config.hidden_size
        self.pooling = "clip" if self.is_clip else st.pooling or "mean"
        self.normalize = st.normalize
        self.max_length = min(self.tokenizer.model_max_length,
                              getattr(config, "max_position_embeddings",
                                      self.tokenizer.model_max_length),
                              st.max_seq_length or 10 ** 6)
        self.n_truncated = 0
        self.is_tiny = (Path(self.name) / TINY_MARKER).is_file()

    def __repr__(self) -> str:
        return (f"TextEncoder({self.name!r}, dim={self.dim}, pooling={self.pooling!r}, "
                f"max_length={self.max_length})")

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Untruncated token count of each text, special tokens included."""
        if not texts:
            return []
        ids = self.tokenizer(list(texts), truncation=False, verbose=False)["input_ids"]
        return [len(x) for x in ids]

    def truncation_report(self, texts: Sequence[str]) -> dict:
        """How many `texts` this encoder truncates, and how many tokens they lose at the end."""
        counts = self.count_tokens(list(texts))
        lost = [n - self.max_length for n in counts if n > self.max_length]
        return {"n_texts": len(counts), "max_length": self.max_length, "n_truncated": len(lost),
                "share_truncated": len(lost) / len(counts) if counts else 0.0,
                "mean_tokens_lost": sum(lost) / len(lost) if lost else 0.0}

    @torch.inference_mode()
    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Embed `texts` in batches: float32 [N, dim] on the CPU."""
        return self._encode(list(texts), with_tokens=False)[0]

    @torch.inference_mode()
    def encode_tokens(self, texts: Sequence[str]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(pooled float32 [N, dim], token states: one float32 [L_i, token_dim] per text, padding
        removed), on the CPU."""
        return self._encode(list(texts), with_tokens=True)

    def _encode(self, texts: list[str], with_tokens: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if not texts:
            return torch.empty(0, self.dim), []
        pooled, tokens = [], []
        for start in range(0, len(texts), self.batch_size):
            batch = texts[start:start + self.batch_size]
            self.n_truncated += sum(n > self.max_length for n in self.count_tokens(batch))
            inputs = self.tokenizer(batch, padding=True, truncation=True,
                                    max_length=self.max_length, return_tensors="pt").to(self.device)
            out = self.model(**inputs)
            pooled.append(self._pool(out, inputs["attention_mask"]).float().cpu())
            if with_tokens:
                states = out.last_hidden_state.float().cpu()
                lengths = inputs["attention_mask"].sum(1).tolist()
                tokens += [s[:n] for s, n in zip(states, lengths)]
        return torch.cat(pooled), tokens

    def _pool(self, out, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.is_clip:
            return out.text_embeds
        states, mask = out.last_hidden_state, attention_mask[..., None].to(out.last_hidden_state.dtype)
        if self.pooling == "cls":
            pooled = states[:, 0]
        elif self.pooling == "max":
            pooled = states.masked_fill(mask == 0, -torch.inf).amax(1)
        else:
            pooled = (states * mask).sum(1) / mask.sum(1).clamp_min(1)
            if self.pooling == "mean_sqrt_len":
                pooled = pooled * mask.sum(1).clamp_min(1).sqrt()
        return self.post(pooled)  # sentence-transformers' Dense and Normalize, in their order


def _load_pretrained(name: str, revision: str | None = None, subfolder: str = "") -> tuple:
    """(tokenizer, model) of a hub name (at `revision`) or a local `save_pretrained` folder, whose
    files may lie in `subfolder` (a sentence-transformers model's Transformer module)."""
    where = {"subfolder": subfolder} if subfolder and not Path(name).is_dir() else {}
    path = str(Path(name) / subfolder) if subfolder and Path(name).is_dir() else name
    try:
        with quiet_transformers():
            config = AutoConfig.from_pretrained(path, trust_remote_code=False,  # never prompts
                                                revision=revision, **where)
            tokenizer = AutoTokenizer.from_pretrained(path, revision=revision, **where)
            model_cls = (CLIPTextModelWithProjection if config.model_type in CLIP_MODEL_TYPES
                         else AutoModel)
            model = model_cls.from_pretrained(path, revision=revision, **where)
    except (OSError, ValueError, RuntimeError) as err:  # RuntimeError: weights do not fit
        if "trust_remote_code" not in str(err):
            raise TextModelError(
                f"The text model {name!r} could not be loaded ({type(err).__name__}). Give the path "
                "of a local folder holding a `save_pretrained` copy of the model and its tokenizer, "
                f"or use the tiny offline model (text model {TINY_TEXT_MODEL!r}, built by "
                "`helpers.tiny_clip.make_tiny_clip`).") from err
        raise TextModelError(  # e.g. CXR-BERT, microsoft/BiomedVLP-CXR-BERT-specialized
            f"The text model {name!r} needs its own code from the model hub (trust_remote_code), "
            "which this project does not run; CXR-BERT's also fails on current transformers (its "
            "output class is not a dataclass). Use CLIP (the default), sentence-transformers/"
            "all-MiniLM-L6-v2, or a local `save_pretrained` copy of a plain BERT-like model.") from err
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
                      cache_dir: str | Path | None = None, fallback: bool = False,
                      revision: str | None = None) -> TextEncoder:
    """A `TextEncoder` (a hub name at `revision`, or a local folder); `helpers.config.TINY_TEXT_MODEL`
    builds (once) and loads the tiny CLIP in `cache_dir` (default `data/text-models`).

    fallback=True (the demo): when the model cannot be loaded because the hub is out of reach,
    use the tiny offline CLIP instead and say so; the encoder's `is_tiny` tells the truth.
    """
    if str(name_or_path) != TINY_TEXT_MODEL:
        local = Path(name_or_path).exists()
        if not fallback or local or hub_reachable():
            try:
                return TextEncoder(name_or_path, device, revision=revision)
            except TextModelError:
                if not fallback or local:
                    raise
        print(f"Text model {str(name_or_path)!r} cannot be loaded (no model hub): using the tiny "
              "offline CLIP with random weights instead. Results show that the model can read a "
              "text, not how well the real encoder works.")
    return TextEncoder(make_tiny_clip(cache_dir or TEXT_MODELS_DIR), device)



class EmbeddingCache:
    """Each unique text is encoded once per (model, text); optionally persisted to a .pt file.

    With `with_tokens=True` the token states are kept too (for fusions that attend to tokens);
    with `places=True` each embedding ends with the text's place code (`places.place_code`, for a
    model with a place prior, from the sentences that `drawn` says describe a drawn finding),
    computed from the words, never stored.
    The file holds `{"model": encoder name, "texts": [...], "emb": float32 [U, D]}` (and
    `"tokens"`: one float32 [L_i, H] per text); one written for another model (or unreadable) is
    ignored and replaced on `save()`.
    """

    def __init__(self, encoder: TextEncoder, path: str | Path | None = None,
                 with_tokens: bool = False, places: bool = False,
                 drawn: Callable[[str], bool] | None = None):
        self.encoder = encoder
        self.drawn = drawn  # the masks' vocabulary (`MaskVocabulary.describes_drawn`) or None
        self.path = Path(path) if path is not None else None
        self.with_tokens, self.places = with_tokens, places
        self.dim = text_input_dim(encoder.dim, places)  # width of `get`'s rows
        self.n_encoded = 0
        self._emb: dict[str, torch.Tensor] = {}
        self._tok: dict[str, torch.Tensor] = {}
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
        emb, tokens = data.get("emb"), data.get("tokens")
        if not (data.get("model") == self.encoder.name and isinstance(emb, torch.Tensor)
                and emb.ndim == 2 and emb.shape[1] == self.encoder.dim):
            return
        if self.with_tokens and not (isinstance(tokens, list) and len(tokens) == len(emb)):
            return  # encoded without tokens: encode again
        self._emb = dict(zip(data["texts"], emb.float()))
        if self.with_tokens:
            self._tok = dict(zip(data["texts"], tokens))

    def _encode_new(self, texts: Sequence[str]) -> None:
        new = [t for t in dict.fromkeys(texts) if t not in self._emb]
        if not new:
            return
        if self.with_tokens:
            pooled, tokens = self.encoder.encode_tokens(new)
            self._tok.update(zip(new, tokens))
        else:
            pooled = self.encoder.encode(new)
        self._emb.update(zip(new, pooled))
        self.n_encoded += len(new)

    def get(self, texts: Sequence[str]) -> torch.Tensor:
        """Embeddings of `texts` (float32 [N, dim], CPU); only texts not seen before are encoded."""
        self._encode_new(texts)
        if not texts:
            return torch.empty(0, self.dim)
        emb = torch.stack([self._emb[t] for t in texts])
        return text_input(emb, texts, self.places, self.drawn)

    def tokens(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token states of `texts` padded to the longest: (float32 [N, L, H], bool mask [N, L],
        True on real tokens). Needs `with_tokens=True`."""
        if not self.with_tokens:
            raise ValueError("This EmbeddingCache keeps no token states: create it with "
                             "with_tokens=True.")
        self._encode_new(texts)
        states = [self._tok[t] for t in texts]
        length = max((len(x) for x in states), default=1)
        out = torch.zeros(len(states), length, self.encoder.token_dim)
        mask = torch.zeros(len(states), length, dtype=torch.bool)
        for i, x in enumerate(states):
            out[i, :len(x)], mask[i, :len(x)] = x, True
        return out, mask

    def table(self, texts: Sequence[str]) -> tuple[torch.Tensor, list[int]]:
        """A table of the unique texts' embeddings (float32 [U, dim]) and each text's row in it."""
        unique = list(dict.fromkeys(texts))
        row = {t: i for i, t in enumerate(unique)}
        return self.get(unique), [row[t] for t in texts]

    def save(self) -> None:
        """Write all embeddings (and token states) seen so far to `path`."""
        if self.path is None:
            raise ValueError("This EmbeddingCache has no file: create it with a path to save it.")
        texts = list(self._emb)
        emb = (torch.stack([self._emb[t] for t in texts]) if texts
               else torch.empty(0, self.encoder.dim))
        payload = {"model": self.encoder.name, "texts": texts, "emb": emb}
        if self.with_tokens:
            payload["tokens"] = [self._tok[t] for t in texts]
        save_checkpoint(payload, self.path)
