"""Frozen text encoder (any Hugging Face model), the tiny offline CLIP, and the embedding cache.

A report's text becomes one float32 vector: CLIP's projected `text_embeds` (512-d for the default
`openai/clip-vit-base-patch32`), or the pooled output of a BERT-like model. Without the model hub
(CI, offline demo), `make_tiny_clip` builds a small random-weight CLIP text model and a BPE
tokenizer trained on radiology words, saved so that they load through the same `from_pretrained`
path as the real model.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import re
import socket
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import urlparse

import tokenizers
import torch
import transformers
from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import (AutoConfig, AutoModel, AutoTokenizer, CLIPTextConfig,
                          CLIPTextModelWithProjection, CLIPTokenizerFast)
from transformers.utils import logging as hf_logging

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import TINY_TEXT_MODEL

CLIP_MODEL_TYPES = ("clip", "clip_text_model")
CLIP_MAX_LENGTH = 77
BOS, EOS, END_OF_WORD = "<|startoftext|>", "<|endoftext|>", "</w>"
TINY_MARKER = "tiny_clip.json"
DEFAULT_TINY_DIR = Path("data") / "tiny-clip"

# CLIP's word splitting (transformers' CLIPTokenizer): specials, contractions, letters, single
# digits, punctuation runs.
_CLIP_SPLIT = (r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]"
               r"|[^\s\p{L}\p{N}]+")

# Words of chest X-ray reports, so that each is one token of the tiny tokenizer.
RADIOLOGY_WORDS = """
left right upper middle lower lobe lobes lung lungs base bases apex apical basilar basal lingula
hilum hilar perihilar mediastinum mediastinal cardiomediastinal silhouette contour contours heart
cardiac size normal abnormal enlarged enlargement mild mildly moderate moderately severe small
large tiny stable unchanged new old prior previous interval improved worsened increased decreased
nodule nodules mass masses opacity opacities opacification consolidation consolidations
infiltrate infiltrates effusion effusions pleural pleura pneumothorax pneumonia atelectasis
atelectatic cardiomegaly edema congestion vascular vasculature pulmonary granuloma granulomas
granulomatous calcified calcification calcifications scarring scar fibrosis fibrotic emphysema
hyperinflation hyperinflated hyperexpanded interstitial airspace disease process focal diffuse
patchy streaky linear bibasilar bilateral bilaterally unilateral lateral frontal view views chest
pa ap thoracic spine vertebral osseous structures bony bones rib ribs fracture fractures
degenerative changes change spondylosis osteophytes sternotomy wires clips surgical postsurgical
aorta aortic arch tortuous tortuosity ectatic knob diaphragm hemidiaphragm
hemidiaphragms costophrenic angle angles blunting blunted trachea midline shift deviation
zone zones region regions field fields side sides segment segmental adjacent overlying
projecting projects within limits clear clearing well expanded aerated inflated acute
cardiopulmonary abnormality abnormalities finding findings evidence suspicious concerning
consistent compatible suggestive likely possible possibly probable may represent suggest
suggests noted seen identified visualized demonstrated present absent again redemonstrated
there is are was were no not without with and or of in the a an at to on by for from this
these that which also but as be been has have otherwise minimal minimally slight slightly
borderline top upper-normal low volumes volume lucency density densities shadow shadows
catheter tube line pacemaker device leads port tip terminates cavoatrial junction
superior vena cava atrium ventricle subsegmental bronchovascular crowding markings marking
thickening thickened peribronchial bronchial bronchiectasis airway airways nodular reticular
reticulonodular miliary hazy haziness ill-defined well-defined rounded round oval lesion
lesions cm mm measuring measures approximately about quadrant axillary retrocardiac
paratracheal subcarinal lymph node nodes lymphadenopathy adenopathy soft tissue tissues
abdomen upper-abdomen gas free subdiaphragmatic hernia hiatal elevated elevation
eventration obscured obscuring silhouetting infection inflammatory malignancy neoplasm
recommend recommended follow-up followup ct comparison compared dated exam examination
radiograph radiographs film films portable upright supine technique rotation rotated
patient bone normally show shows demonstrates appear appears appearance unremarkable intact
negative grossly chronic healed status post cholecystectomy vascularity definite since
""".split()


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


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' warnings and progress bars for a while: loading CLIP's text half
    from a full CLIP checkpoint lists every unused vision weight."""
    verbosity = hf_logging.get_verbosity()
    progress = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if progress:
            hf_logging.enable_progress_bar()


def _load_pretrained(name: str) -> tuple:
    """(tokenizer, model) of a hub name or a local `save_pretrained` folder."""
    try:
        with _quiet_transformers():
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
            "`helpers.text.make_tiny_clip`).") from err
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
    in `cache_dir` (default `data/tiny-clip`).

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
    return TextEncoder(make_tiny_clip(cache_dir or DEFAULT_TINY_DIR), device)


def make_tiny_clip(dest: str | Path, corpus: Sequence[str] | None = None, *,
                   hidden_size: int = 128, num_layers: int = 2, num_heads: int = 4,
                   projection_dim: int = 128, vocab_size: int = 2000, seed: int = 0) -> Path:
    """Build a tiny random-weight CLIP text model and its tokenizer in `dest`, offline.

    The tokenizer is a CLIP byte-level BPE (lowercase, `</w>` word ends, `<|startoftext|>` and
    `<|endoftext|>`) trained on `corpus` and `RADIOLOGY_WORDS`, so report words are mostly single
    tokens. Both are written with `save_pretrained` and load with `AutoTokenizer` and
    `CLIPTextModelWithProjection.from_pretrained(dest)`. Nothing is rebuilt when `dest` already
    holds a model made with the same arguments, corpus and library versions (recorded in
    `tiny_clip.json`, written last).

    Returns:
        `dest` as a Path.
    """
    dest = Path(dest)
    corpus = list(corpus or [])
    spec = {"hidden_size": hidden_size, "num_layers": num_layers, "num_heads": num_heads,
            "projection_dim": projection_dim, "vocab_size": vocab_size, "seed": seed,
            "corpus_sha1": hashlib.sha1("\n".join(corpus).encode()).hexdigest(),
            "transformers": transformers.__version__, "tokenizers": tokenizers.__version__}
    marker = dest / TINY_MARKER
    if marker.is_file() and json.loads(marker.read_text()) == spec:
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)  # until the new model is complete
    (dest / "tokenizer.json").unlink(missing_ok=True)  # would be read instead of the new vocab

    vocab, merges = _train_clip_bpe(corpus + RADIOLOGY_WORDS, vocab_size)
    (dest / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (dest / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n",
                                     encoding="utf-8")
    with _quiet_transformers():
        tokenizer = CLIPTokenizerFast.from_pretrained(dest, model_max_length=CLIP_MAX_LENGTH)
        tokenizer.save_pretrained(dest)

    config = CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=hidden_size, intermediate_size=4 * hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads,
        max_position_embeddings=CLIP_MAX_LENGTH, projection_dim=projection_dim,
        # pooling reads the hidden state at the first eos_token_id (any id but the legacy 2)
        bos_token_id=vocab[BOS], eos_token_id=vocab[EOS], pad_token_id=vocab[EOS])
    torch.manual_seed(seed)
    with _quiet_transformers():
        CLIPTextModelWithProjection(config).save_pretrained(dest)
    marker.write_text(json.dumps(spec, indent=1))
    return dest


def _train_clip_bpe(texts: Sequence[str], vocab_size: int) -> tuple[dict[str, int], list[str]]:
    """Train byte-level BPE merges the way CLIP splits words; return CLIP's vocab layout.

    The vocab holds every byte symbol alone and with `</w>` (no text maps to an unknown token,
    which in CLIP is the end token and would end the sequence), then the merges in order, then
    `<|startoftext|>` and `<|endoftext|>`.
    """
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    base = alphabet + [c + END_OF_WORD for c in alphabet]
    n_merges = vocab_size - len(base) - 2
    if n_merges < 1:
        raise ValueError(f"vocab_size must exceed {len(base) + 2} (the byte symbols and the two "
                         f"special tokens), got {vocab_size}")
    bpe = Tokenizer(models.BPE(end_of_word_suffix=END_OF_WORD))
    bpe.normalizer = normalizers.Sequence([normalizers.NFC(),
                                           normalizers.Replace(Regex(r"\s+"), " "),
                                           normalizers.Lowercase()])
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_CLIP_SPLIT), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    trainer = trainers.BpeTrainer(vocab_size=len(base) + n_merges, initial_alphabet=alphabet,
                                  end_of_word_suffix=END_OF_WORD, show_progress=False)
    bpe.train_from_iterator(texts, trainer)
    merges = [m if isinstance(m, str) else " ".join(m)  # tokenizers < 0.20 stores "a b" strings
              for m in json.loads(bpe.to_str())["model"]["merges"]][:n_merges]
    tokens = list(dict.fromkeys(base + [m.replace(" ", "") for m in merges] + [BOS, EOS]))
    return {token: i for i, token in enumerate(tokens)}, merges


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
